import CProcessPoolShims
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// The storage behind a `ProcessPoolExecutor`: the one `Mutex<PoolState>`, and the code that
/// carries out what state transitions ask for (spawning, writing, signalling, finishing
/// futures) with the lock released. The I/O thread keeps it alive until every worker is reaped,
/// so dropping the executor finishes the work instead of orphaning it.
final class PoolCore: Sendable {
  let state: Mutex<PoolState>
  let configuration: ProcessPoolExecutor.Configuration
  /// The initializer's `initialize` payload (type name and value), sent first to every worker.
  let initializerPayload: [UInt8]?
  /// `pp_fork_generation()` when the pool was made: a forked child sees another count.
  private let forkGeneration = pp_fork_generation()
  private let stopWaiters = Mutex<[CheckedContinuation<Void, Never>]>([])
  /// Where the feeder thread sleeps; `feederWoken` (guarded by it) says it was woken since.
  let feederGate = ConditionLock()
  nonisolated(unsafe) var feederWoken = false
  private let stopGate = ConditionLock()
  /// Guarded by `stopGate`: the I/O thread has returned (every socket it held is closed).
  private nonisolated(unsafe) var ioThreadDone = false
  /// Tasks waiting for the I/O thread to return (`withProcessPool`); guarded by `stopGate`.
  private nonisolated(unsafe) var ioThreadWaiters: [CheckedContinuation<Void, Never>] = []

  init(configuration: ProcessPoolExecutor.Configuration, initializerPayload: [UInt8]?) throws(ProcessPoolError) {
    self.configuration = configuration
    self.initializerPayload = initializerPayload
    self.state = Mutex(PoolState(configuration: configuration))
  }

  /// False in a child forked from the process that made the pool: the sockets and the I/O
  /// thread are the parent's, so the child must not write to, signal or wait for its workers.
  var belongsToThisProcess: Bool { pp_fork_generation() == forkGeneration }

  /// Queues jobs under one lock (one dispatch pass for the lot); all or none.
  func enqueue(_ jobs: some Collection<Job>) throws(ProcessPoolError) {
    guard !jobs.isEmpty else { return }
    guard belongsToThisProcess else {
      throw ProcessPoolError(
        .shutDown, "this pool belongs to the process this one was forked from; create a new pool in the child")
    }
    let rejection = transition { state, effects in state.submit(jobs, now: .now, &effects) }
    if let rejection { throw rejection }
  }

  /// Reads something off the state under the lock (no transition).
  func read<T>(_ body: (borrowing PoolState) -> T) -> T {
    state.withLock { body($0) }
  }

  /// Runs a transition under the lock, then its effects without it.
  @discardableResult
  func transition<T>(_ body: (inout PoolState, inout PoolEffects) -> T) -> T {
    var effects = PoolEffects()
    let result = state.withLock { body(&$0, &effects) }
    perform(effects)
    return result
  }

  /// `transition` that leaves the writes to the caller: the workers it would flush are added
  /// to `flushes` (they hold the writer role until the caller flushes them).
  func transition<T>(deferringFlushesTo flushes: inout [Int], _ body: (inout PoolState, inout PoolEffects) -> T) -> T {
    var effects = PoolEffects()
    let result = state.withLock { body(&$0, &effects) }
    if !effects.flushes.isEmpty {
      for worker in effects.flushes where !flushes.contains(worker) { flushes.append(worker) }
      effects.flushes = []
    }
    perform(effects)
    return result
  }

  func perform(_ effects: PoolEffects) {
    for (level, message) in effects.logs { ProcessPoolLog.emit(level, message) }
    for signal in effects.signals {
      if let pidfd = signal.pidfd {
        Syscall.signal(pidfd: pidfd.fd, signal.signal)
      } else {
        Syscall.kill(signal.pid, signal.signal)
      }
    }
    for workerID in effects.flushes { flush(worker: workerID) }
    for sink in effects.cancellations { sink.cancelAll() }
    for sink in effects.acknowledgedCancels { sink.acknowledgeCancel() }
    for (sink, error) in effects.failures { sink.fail(error) }
    for (source, error) in effects.stoppedSources { source.stop(error) }
    if effects.startFeeder { startFeeder() }
    if effects.wakeFeeder { wakeFeeder() }
    if !effects.spawns.isEmpty { requestSpawns(effects.spawns) }
    if effects.wakeIO || !effects.spawns.isEmpty { wakeIOThread() }
    if effects.stopped { resumeStopWaiters() }
  }

  // MARK: Workers

  /// Hands spawns to the I/O thread (started here if need be): a submit never waits for a
  /// process to start, and a pool of hundreds of workers fills up without holding its caller.
  private func requestSpawns(_ launchers: [Int]) {
    guard startIOThreadIfNeeded(failing: launchers) else { return }
    state.withLock { $0.queueSpawns(launchers) }
    spawnsQueued.store(true, ordering: .releasing)
  }

  /// Set when spawns are queued: the I/O thread looks at the queue only then, not on every pass
  /// (one lock less per pass on the hot path).
  private let spawnsQueued = Atomic<Bool>(false)

  /// Spawns what `requestSpawns` queued; on the I/O thread.
  func spawnPendingWorkers() {
    guard spawnsQueued.exchange(false, ordering: .acquiringAndReleasing) else { return }
    while true {
      let launchers = state.withLock { $0.takePendingSpawns() }
      if launchers.isEmpty { return }
      for launcher in launchers { spawnWorker(launcher: launcher) }
    }
  }

  /// Workers spawned on a thread other than the I/O thread (kept at zero; tests check it).
  let spawnsOffIOThread = Atomic<Int>(0)

  private func spawnWorker(launcher: Int) {
    if pp_is_io_thread() == 0 { spawnsOffIOThread.add(1, ordering: .relaxed) }
    let spawnedAt = MonotonicInstant.now
    do {
      let worker = try WorkerSpawner.spawn(
        state.withLock { $0.launchers[launcher] }, standardError: configuration.workerStandardError,
        backtraces: configuration.workerBacktraces)
      transition { state, effects in
        _ = state.workerSpawned(
          launcher: launcher, worker, spawnedAt: spawnedAt, initializer: initializerPayload, &effects)
      }
    } catch {
      transition { state, effects in
        state.spawnFailed(launcher: launcher, error.error, exhausted: error.exhausted, now: .now, &effects)
      }
    }
  }

  /// Starts the I/O thread if it is not running; false (and the pool broken, the spawns of
  /// `launchers` uncounted) if it cannot start.
  private func startIOThreadIfNeeded(failing launchers: [Int]) -> Bool {
    guard state.withLock({ $0.claimIOThreadStart() }) else { return true }
    // Registered here, on the submitting thread: `main` may return as soon as submit does.
    ActivePools.register(self)
    do {
      let pipe = try Syscall.wakeChannel()
      state.withLock { $0.ioThreadStarting(wakeChannel: (Socket(pipe.read), Socket(pipe.write))) }
      try OSThread.start(name: "processpool-io") {
        pp_mark_io_thread()
        self.runIOLoop()
      }
      return true
    } catch {
      ActivePools.unregister(self)
      transition { state, effects in
        state.ioThreadFailedToStart(spawns: launchers, "\(error)", now: .now, &effects)
      }
      return false
    }
  }

  /// Wakes the I/O thread out of `poll` (a byte on its pipe; a full pipe already wakes it).
  func wakeIOThread() {
    guard let pipe = state.withLock({ $0.wakeChannel?.write }) else { return }
    var byte: UInt8 = 1
    // A full buffer already means a pending wake-up; a closed one means the thread is gone.
    _ = try? Syscall.send(pipe.fd, &byte, 1, nonBlocking: true)
  }

  /// Writes a worker's pending bytes; the caller holds the writer role (`flushing`). Stops at
  /// a full socket and hands the rest to the I/O thread, so no caller ever blocks on a worker.
  func flush(worker id: Int) {
    while true {
      let claim = state.withLock { $0.takeOutgoing(worker: id) }
      guard let (socket, bytes, offset) = claim else { return }
      var sent = offset
      var blocked = false
      bytes.withUnsafeBytes { raw in
        while sent < raw.count {
          do {
            sent += try Syscall.send(socket.fd, raw.baseAddress! + sent, raw.count - sent, nonBlocking: true)
          } catch let error as Errno where error.code == EAGAIN || error.code == EWOULDBLOCK {
            blocked = true
            return
          } catch {
            // The worker is gone; the I/O thread sees its end of stream and handles the work.
            sent = raw.count
          }
        }
      }
      if blocked {
        state.withLock { $0.socketFull(worker: id, unsent: bytes, from: sent) }
        wakeIOThread()
        return
      }
    }
  }

  /// What a future calls to stop the worker running it; weak, so futures do not keep the pool.
  /// Returns nil when the future's job is not the one its worker runs (it is left alone), else
  /// what fails the job's other futures (a `map` chunk) once the caller has cancelled its own.
  var stopWorkerHook: @Sendable (ObjectIdentifier) -> (@Sendable () -> Void)? {
    { [weak self] future in
      guard let self, self.belongsToThisProcess else { return nil }
      let job = self.transition { state, effects in state.stopWorker(running: future, now: .now, &effects) }
      guard let job else { return nil }
      return {
        job.sink.fail(ProcessPoolError(.cancelled, "the task was cancelled while running; its worker was stopped"))
      }
    }
  }

  // MARK: Shutdown

  /// Waits (without blocking a thread) until every worker has exited and been reaped.
  func waitUntilStopped() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let stopped = stopWaiters.withLock { waiters -> Bool in
        if state.withLock({ $0.lifecycle == .stopped }) { return true }
        waiters.append(continuation)
        return false
      }
      if stopped { continuation.resume() }
    }
  }

  /// Blocks the calling thread until stopped (used at process exit). On an I/O thread (a
  /// done-callback) it returns at once: that thread must go on for the pool to stop.
  func blockUntilStopped() {
    if pp_is_io_thread() != 0 { return }
    stopGate.withLock {
      _ = stopGate.wait(until: nil) { state.withLock { $0.lifecycle == .stopped } }
    }
  }

  func ioThreadExited() {
    let waiters = stopGate.withLock {
      ioThreadDone = true
      stopGate.broadcast()
      defer { ioThreadWaiters = [] }
      return ioThreadWaiters
    }
    for waiter in waiters { waiter.resume() }
  }

  /// `waitForIOThread` without blocking a thread.
  func ioThreadReturned() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let done = stopGate.withLock { () -> Bool in
        if ioThreadDone || !state.withLock({ $0.ioThreadRunning }) { return true }
        ioThreadWaiters.append(continuation)
        return false
      }
      if done { continuation.resume() }
    }
  }

  /// Blocks until the I/O thread has returned, or at once if it never started.
  func waitForIOThread() {
    stopGate.withLock {
      _ = stopGate.wait(until: nil) { ioThreadDone || !state.withLock { $0.ioThreadRunning } }
    }
  }

  private func resumeStopWaiters() {
    let waiters = stopWaiters.withLock { waiters in
      defer { waiters = [] }
      return waiters
    }
    for waiter in waiters { waiter.resume() }
    stopGate.withLock { stopGate.broadcast() }
  }
}
