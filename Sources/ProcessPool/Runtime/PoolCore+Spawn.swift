import CProcessPoolShims
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Starting workers, on the I/O thread: the spawns the state queued, and the fork server's
/// answers to the forks asked of it (the thread goes on with its loop meanwhile).
extension PoolCore {
  /// The spawns the I/O thread has under way.
  struct SpawnsInFlight {
    /// A local worker the fork server has yet to answer for.
    struct Fork {
      let launcher: Int
      let spawnedAt: MonotonicInstant
      let worker: PendingWorker
    }

    var forks: [Fork] = []

    var isEmpty: Bool { forks.isEmpty }
  }

  /// Spawns what `requestSpawns` queued, and makes workers of the fork server's answers that
  /// came; on the I/O thread. Forks asked for go to `pending` until their answer. Returns the
  /// new workers' channels.
  func spawnPendingWorkers(_ poller: EventPoller, pending: inout SpawnsInFlight) -> [WorkerChannel] {
    var spawned: [WorkerChannel] = []
    if !pending.forks.isEmpty { finishSpawns(poller, pending: &pending, into: &spawned) }
    if spawnsQueued.exchange(false, ordering: .acquiringAndReleasing) {
      while true {
        let launchers = state.withLock { $0.takePendingSpawns() }
        if launchers.isEmpty { break }
        for launcher in launchers {
          startWorker(launcher: launcher, spawnedAt: .now, poller, pending: &pending, into: &spawned)
        }
      }
    }
    return spawned
  }

  private func startWorker(
    launcher: Int, spawnedAt: MonotonicInstant, _ poller: EventPoller, pending: inout SpawnsInFlight,
    into spawned: inout [WorkerChannel]
  ) {
    if pp_is_io_thread() == 0 { spawnsOffIOThread.add(1, ordering: .relaxed) }
    let workerLauncher = state.withLock { $0.launchers[launcher] }
    do throws(SpawnFailure) {
      let start = try WorkerSpawner.start(
        workerLauncher, standardError: configuration.workerStandardError, backtraces: configuration.workerBacktraces,
        forksInFlight: pending.forks.count, poller: poller, owner: ObjectIdentifier(self),
        wake: { [weak self] in self?.wakeIOThread() })
      switch start {
      case .spawned(let worker):
        if let channel = adopt(worker, launcher: launcher, spawnedAt: spawnedAt, poller) { spawned.append(channel) }
      case .pending(let worker):
        pending.forks.append(SpawnsInFlight.Fork(launcher: launcher, spawnedAt: spawnedAt, worker: worker))
      }
    } catch {
      spawnFailed(launcher: launcher, error)
    }
  }

  private func spawnFailed(launcher: Int, _ failure: SpawnFailure) {
    transition { state, effects in
      state.spawnFailed(launcher: launcher, failure.error, exhausted: failure.exhausted, now: .now, &effects)
    }
  }

  /// Makes workers of the pending spawns the fork server answered (a lost one is started again).
  private func finishSpawns(_ poller: EventPoller, pending: inout SpawnsInFlight, into spawned: inout [WorkerChannel]) {
    var index = 0
    while index < pending.forks.count {
      guard pending.forks[index].worker.request.answer != nil else {
        index += 1
        continue
      }
      let spawn = pending.forks.remove(at: index)
      do throws(SpawnFailure) {
        if let worker = try WorkerSpawner.finish(spawn.worker) {
          if let channel = adopt(worker, launcher: spawn.launcher, spawnedAt: spawn.spawnedAt, poller) {
            spawned.append(channel)
          }
        } else {
          startWorker(
            launcher: spawn.launcher, spawnedAt: spawn.spawnedAt, poller, pending: &pending, into: &spawned)
        }
      } catch {
        spawnFailed(launcher: spawn.launcher, error)
      }
    }
  }

  /// Watches a started worker and tells the state; nil (the state told the start failed) when it
  /// cannot be watched.
  private func adopt(_ worker: SpawnedWorker, launcher: Int, spawnedAt: MonotonicInstant, _ poller: EventPoller)
    -> WorkerChannel?
  {
    let launched = state.withLock { $0.launchers[launcher].arguments != nil }
    let id = lastWorkerID.add(1, ordering: .relaxed).newValue
    let channel: WorkerChannel
    do {
      channel = try WorkerChannel(
        worker: id, worker, launched: launched, forwardStandardError: configuration.workerStandardError == .forward,
        poller: poller)
    } catch {
      // Cannot be watched: stopped and reaped at once, the start failed.
      Syscall.kill(launched ? -worker.pid : worker.pid, SIGKILL)
      _ = try? ForkServer.waitPID(worker.pid, noHang: false)
      spawnFailed(launcher: launcher, SpawnFailure("cannot watch the worker's descriptors", error))
      return nil
    }
    channels.withLock { $0[channel.worker] = channel }
    transition { state, effects in
      state.workerSpawned(
        worker: channel.worker, launcher: launcher, pid: channel.pid, spawnedAt: spawnedAt,
        sharesMemory: channel.ring?.values != nil, initializer: initializerPayload, &effects)
    }
    return channel
  }
}
