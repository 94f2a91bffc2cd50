import CProcessPoolShims
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// The pools whose I/O thread runs. At process exit each is shut down gracefully and waited for,
/// as CPython does at interpreter exit: work submitted before `main` returns still completes,
/// and no worker outlives its parent.
///
/// A pool is registered by the thread that starts its I/O thread, before `submit` returns, so
/// `main` can never return between a submit and the registration.
enum ActivePools {
  private static let pools = Mutex<(cores: [ObjectIdentifier: PoolCore], hooked: Bool)>(([:], false))

  static func register(_ core: PoolCore) {
    let hook = pools.withLock { pools -> Bool in
      pools.cores[ObjectIdentifier(core)] = core
      defer { pools.hooked = true }
      return !pools.hooked
    }
    if hook { atexit { ActivePools.finishAll() } }
  }

  static func unregister(_ core: PoolCore) {
    _ = pools.withLock { $0.cores.removeValue(forKey: ObjectIdentifier(core)) }
  }

  static func isRegistered(_ core: PoolCore) -> Bool {
    pools.withLock { $0.cores[ObjectIdentifier(core)] != nil }
  }

  private static func finishAll() {
    // exit() called from an I/O thread (a done-callback, say) cannot wait for itself.
    if pp_is_io_thread() != 0 { return }
    // A forked child inherits the list but not the I/O threads: its parent's pools are not its own.
    let cores = pools.withLock { Array($0.cores.values) }.filter(\.belongsToThisProcess)
    for core in cores { finish(core) }
  }

  /// Shuts one pool down gracefully and waits for it, from the exit hook.
  static func finish(_ core: PoolCore) {
    core.transition { state, effects in state.shutdown(cancelFutures: false, now: .now, &effects) }
    // `main` returned (or `exit` was called) on the main actor, which runs nothing more: the
    // input of a map made there is pulled here, or the pool would wait for it forever.
    core.drainSources(pulledOn: MainActor.shared)
    core.blockUntilStopped()
  }
}
