import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// The pools whose I/O thread runs. At process exit each is shut down gracefully and waited for,
/// as CPython does at interpreter exit: work submitted before `main` returns still completes,
/// and no worker outlives its parent.
enum ActivePools {
  private static let pools = Mutex<(cores: [ObjectIdentifier: (PoolCore, pthread_t)], hooked: Bool)>(([:], false))

  static func register(_ core: PoolCore) {
    let hook = pools.withLock { pools -> Bool in
      pools.cores[ObjectIdentifier(core)] = (core, pthread_self())
      defer { pools.hooked = true }
      return !pools.hooked
    }
    if hook { atexit { ActivePools.finishAll() } }
  }

  static func unregister(_ core: PoolCore) {
    _ = pools.withLock { $0.cores.removeValue(forKey: ObjectIdentifier(core)) }
  }

  private static func finishAll() {
    let cores = pools.withLock { Array($0.cores.values) }
    // exit() called from an I/O thread (a done-callback, say) cannot wait for itself.
    if cores.contains(where: { pthread_equal($0.1, pthread_self()) != 0 }) { return }
    for (core, _) in cores {
      core.transition { state, effects in state.shutdown(cancelFutures: false, &effects) }
      core.blockUntilStopped()
    }
  }
}
