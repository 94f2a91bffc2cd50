import CProcessPoolShims
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// The storage behind a `ProcessPoolExecutor`: the one `Mutex<PoolState>`, and the code that
/// carries out what state transitions ask for (spawning, writing, signalling, finishing
/// futures) with the lock released. The I/O thread keeps it alive until every worker is reaped,
/// so dropping the executor finishes the work instead of orphaning it.
///
/// Lock order: the state's lock, then `channels`, then one channel's output lock; also the
/// state's lock, then a future's own lock (`JobSink.start` marks a future running, nothing
/// more). Never the reverse: a future's watchers (continuations, `asCompleted`, done-callbacks)
/// run only from `perform`, with no pool lock held.
final class PoolCore: Sendable {
  let state: Mutex<PoolState>
  /// Every worker's channel, by worker id: added when the I/O thread spawned it, removed and
  /// closed when the state lets it go (`PoolEffects.closes`). Taken inside the state's lock
  /// (to queue frames) or alone, never the other way round.
  let channels = Mutex<[Int: WorkerChannel]>([:])
  /// The socket pair that wakes the I/O thread. It lives exactly as long as that thread, which
  /// closes it when it returns; a wake-up writes under the lock, never to a closed descriptor.
  private let wakeChannel = Mutex<(read: Int32, write: Int32)?>(nil)
  /// The id of the last worker spawned (ids start at 1).
  let lastWorkerID = Atomic<Int>(0)
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
    self.state = Mutex(PoolState(configuration: configuration, processors: Int(pp_available_cpus())))
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

  /// Queues a map's batch of chunks (as `enqueue` does jobs).
  func enqueue(_ batch: any JobBatch) throws(ProcessPoolError) {
    guard belongsToThisProcess else {
      throw ProcessPoolError(
        .shutDown, "this pool belongs to the process this one was forked from; create a new pool in the child")
    }
    let rejection = transition { state, effects in state.submit(batch, now: .now, &effects) }
    if let rejection { throw rejection }
  }

  /// Reads something off the state under the lock (no transition).
  func read<T>(_ body: (borrowing PoolState) -> T) -> T {
    state.withLock { body($0) }
  }

  /// Runs a transition under the lock, then its effects without it.
  @discardableResult
  func transition<T>(_ body: (inout PoolState, inout PoolEffects) -> T) -> T {
    var flushes: [WorkerChannel] = []
    let result = transition(deferringFlushesTo: &flushes, body)
    for channel in flushes { channel.flush() }
    return result
  }

  /// `transition` that leaves the writes to the caller: the channels it would flush are added
  /// to `flushes` (the caller holds their writer role until it flushes them).
  func transition<T>(
    deferringFlushesTo flushes: inout [WorkerChannel], _ body: (inout PoolState, inout PoolEffects) -> T
  ) -> T {
    var effects = PoolEffects()
    var copies: [SharedCopy] = []
    let result = state.withLock { state -> T in
      let result = body(&state, &effects)
      // Queued before the lock is released, so each worker's frames go out in the order the
      // state decided them; written after.
      if !effects.writes.isEmpty { queue(effects.writes, flushes: &flushes, copies: &copies) }
      return result
    }
    // Large inputs are copied into shared memory without the lock (a copy of gigabytes takes
    // a second); their channels write nothing until then.
    for copy in copies {
      copy.values.copyRun(copy.frame, tail: copy.tail, to: copy.span)
      if copy.channel.releaseHold() { flushes.append(copy.channel) }
    }
    perform(effects)
    return result
  }

  /// A large job's payload to copy into the room reserved for it in its worker's region.
  private struct SharedCopy {
    let channel: WorkerChannel
    let values: SharedValues
    let frame: [UInt8]
    let tail: [UInt8]
    let span: SharedValues.Span
  }

  /// Appends frames to their workers' channels; a channel whose writer role this thread took
  /// is added to `flushes`, a large job's payload to copy to `copies`.
  private func queue(_ writes: [PoolEffects.Write], flushes: inout [WorkerChannel], copies: inout [SharedCopy]) {
    channels.withLock { channels in
      for write in writes {
        // A worker without a channel is one a test drives, or gone: nothing to write to.
        guard let channel = channels[write.worker] else { continue }
        // A large job goes through the memory the worker shares with the parent: only its
        // place crosses the socket, held back until the payload is there.
        if let id = write.run, let values = channel.ring?.values,
          let span = values.reserveRun(write.bytes, tail: write.tail)
        {
          // Held: it never takes the writer role (`releaseHold` may, once the copy is made).
          _ = channel.append(SharedValues.frame(.runShared, id: id, span), holding: true)
          copies.append(
            SharedCopy(channel: channel, values: values, frame: write.bytes, tail: write.tail, span: span))
        } else if channel.append(write.tail.isEmpty ? write.bytes : write.bytes + write.tail) {
          // (A tail is made only for local workers, which have shared memory unless mapping it
          // failed: joining it here, under the lock, is the rare fallback.)
          flushes.append(channel)
        }
      }
    }
  }

  func perform(_ effects: PoolEffects) {
    for (level, message) in effects.logs { ProcessPoolLog.emit(level, message) }
    if !effects.signals.isEmpty {
      let targets = channels.withLock { channels in effects.signals.map { channels[$0.worker] } }
      for (signal, channel) in zip(effects.signals, targets) { channel?.signal(signal.signal, target: signal.pid) }
    }
    for sink in effects.cancellations { sink.cancelAll() }
    for sink in effects.acknowledgedCancels { sink.acknowledgeCancel() }
    for (sink, error) in effects.failures { sink.fail(error) }
    for worker in effects.closes { channels.withLock { $0.removeValue(forKey: worker) }?.close() }
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
  let spawnsQueued = Atomic<Bool>(false)

  /// Workers spawned on a thread other than the I/O thread (kept at zero; tests check it).
  let spawnsOffIOThread = Atomic<Int>(0)

  /// Starts the I/O thread if it is not running; false (and the pool broken, the spawns of
  /// `launchers` uncounted) if it cannot start.
  private func startIOThreadIfNeeded(failing launchers: [Int]) -> Bool {
    guard state.withLock({ $0.claimIOThreadStart() }) else { return true }
    // Registered here, on the submitting thread: `main` may return as soon as submit does.
    ActivePools.register(self)
    do {
      let pipe = try Syscall.wakeChannel()
      wakeChannel.withLock { $0 = pipe }
      let poller: EventPoller
      do {
        poller = try EventPoller()
      } catch {
        closeWakeChannel()
        throw error
      }
      do {
        try poller.add(pipe.read, .wake, worker: 0)
        try OSThread.start(name: "processpool-io") {
          pp_mark_io_thread()
          self.runIOLoop(poller, wake: pipe.read)
        }
      } catch {
        poller.close()
        closeWakeChannel()
        throw error
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

  /// Wakes the I/O thread out of its wait (a byte on its pipe; a full pipe already wakes it).
  func wakeIOThread() {
    wakeChannel.withLock { pipe in
      guard let pipe else { return }
      var byte: UInt8 = 1
      // A full buffer already means a pending wake-up.
      _ = try? Syscall.send(pipe.write, &byte, 1, nonBlocking: true)
    }
  }

  /// Closes the I/O thread's wake-up channel (it returned, or never started).
  func closeWakeChannel() {
    wakeChannel.withLock { pipe in
      guard let (read, write) = pipe else { return }
      Syscall.close(read)
      Syscall.close(write)
      pipe = nil
    }
  }

  /// What a future calls to stop the worker running it (holds the pool weakly).
  var stopWorkerHook: StopWorkerHook { StopWorkerHook(core: self) }

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
