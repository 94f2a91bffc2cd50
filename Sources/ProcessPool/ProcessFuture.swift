import Synchronization

/// The eventual result of a task submitted to a ``ProcessPoolExecutor``.
///
/// The life of a future is CPython's: *pending* in the pool's queue, *running* once handed to a
/// worker, then *finished* with a value or an error, or *cancelled* while still pending.
///
/// ```swift
/// let future = try pool.submit(Countdown(), 5_000_000)
/// print(try await future.value)
/// ```
public final class ProcessFuture<Output: Sendable>: Sendable, CustomStringConvertible {
  let state: Mutex<FutureState<Output>>
  /// Stops the worker running this future (set by the pool that owns it); nil when the future
  /// is not what its worker runs now, else what finishes the job's other futures.
  let stopWorker: StopWorkerHook?
  // The two one-byte properties last, next to each other, with no padding between them.
  /// A pool's future is acknowledged as cancelled at once (the pool skips it when its turn
  /// comes), so `wait` and `asCompleted` count it as done without waiting for a free worker.
  let acknowledgesCancel: Bool
  /// What cancelling the task awaiting `value` does (the pool's `Configuration.cancellation`).
  let cancellation: CancellationMode

  init(
    acknowledgesCancel: Bool = false, stopWorker: StopWorkerHook? = nil,
    cancellation: CancellationMode = .pendingOnly
  ) {
    self.state = Mutex(FutureState())
    self.acknowledgesCancel = acknowledgesCancel
    self.stopWorker = stopWorker
    self.cancellation = cancellation
  }

  /// The task's output, awaited without blocking a thread.
  ///
  /// Throws the task's own error, a ``ProcessPoolError`` (crash, timeout, cancellation), or
  /// `CancellationError` when the awaiting Swift task is cancelled. Cancelling the awaiting task
  /// also cancels this future if it has not started yet; a running task is left to finish,
  /// unless the pool's ``ProcessPoolExecutor/Configuration/cancellation`` is
  /// ``CancellationMode/terminatingWorker`` (see ``value(cancelling:)``).
  ///
  /// It runs on the caller's executor, so the awaiting task resumes where it was (one wake-up)
  /// instead of hopping through the global pool first.
  #if compiler(>=6.2)
    public nonisolated(nonsending) var value: Output {
      get async throws { try await value(isolation: #isolation) }
    }
  #else
    public var value: Output {
      get async throws { try await value(isolation: nil) }
    }
  #endif

  /// ``value``, saying what cancelling the awaiting Swift task does to the task if it is
  /// already running: with ``CancellationMode/terminatingWorker`` its worker is stopped (and
  /// replaced) and the future fails with ``ProcessPoolError/Code/cancelled``.
  ///
  /// ```swift
  /// let render = Task { try await future.value(cancelling: .terminatingWorker) }
  /// render.cancel()  // the worker running the task gets SIGTERM
  /// ```
  #if compiler(>=6.2)
    public nonisolated(nonsending) func value(cancelling mode: CancellationMode) async throws -> Output {
      try await value(isolation: #isolation, cancelling: mode)
    }
  #else
    public func value(cancelling mode: CancellationMode) async throws -> Output {
      try await value(isolation: nil, cancelling: mode)
    }
  #endif

  /// `value`, isolated to the caller's actor (no hop to the global executor and back).
  func value(isolation: isolated (any Actor)?, cancelling mode: CancellationMode? = nil) async throws -> Output {
    let terminating = (mode ?? cancellation) == .terminatingWorker
    // One lock: the outcome if there is one, else an id to wait under.
    let (outcome, id) = state.withLock { state -> (Result<Output, any Error>?, Int) in
      if let outcome = state.outcome { return (outcome, 0) }
      return (nil, state.allocateWaiterID())
    }
    if let outcome { return try outcome.get() }
    // `isolation` is passed on explicitly: inside the operation closure `#isolation` is nil, and
    // a continuation awaited there would resume on the global executor and hop back.
    return try await withTaskCancellationHandler(
      operation: {
        try await withCheckedThrowingContinuation(isolation: isolation) {
          (continuation: CheckedContinuation<Output, any Error>) in
          let ready = state.withLock { $0.register(id, continuation) }
          switch ready {
          case .registered: break
          case .outcome(let outcome): continuation.resume(with: outcome)
          case .abandoned: continuation.resume(throwing: CancellationError())
          }
        }
      },
      onCancel: {
        if let continuation = state.withLock({ $0.abandon(id) }) {
          continuation.resume(throwing: CancellationError())
        }
        _ = cancel(terminatingWorker: terminating)
      }, isolation: isolation)
  }

  /// Blocks the calling thread until the future finishes or `timeout` passes, and returns the
  /// output. Throws ``ProcessPoolError/Code/timedOut`` when the wait times out (the task goes on),
  /// ``ProcessPoolError/Code/cancelled`` when cancelled, or the task's error. A zero or negative
  /// `timeout` only polls; one beyond about 68 years (`.seconds(Int64.max)`) waits without limit.
  @available(*, noasync, message: "use `await future.value` in async code")
  public func result(timeout: Duration? = nil) throws -> Output {
    try waitForOutcome(timeout: timeout).get()
  }

  /// Blocks until the future finishes or `timeout` passes; returns the task's error, or nil when it
  /// returned a value. Throws ``ProcessPoolError/Code/timedOut`` or ``ProcessPoolError/Code/cancelled``.
  /// A zero or negative `timeout` only polls.
  @available(*, noasync, message: "use `await future.value` in async code")
  public func error(timeout: Duration? = nil) throws -> (any Error)? {
    let outcome = try waitForOutcome(timeout: timeout)
    if case .failure(let error) = outcome {
      if let poolError = error as? ProcessPoolError, poolError.code == .cancelled,
        state.withLock({ $0.phase.isCancelled })
      {
        throw poolError
      }
      return error
    }
    return nil
  }

  /// Cancels the task if it has not started. Returns true when the future is (now) cancelled,
  /// false when it is running or finished.
  @discardableResult
  public func cancel() -> Bool {
    let effects = state.withLock { $0.cancel() }
    guard let effects else { return state.withLock { $0.phase.isCancelled } }
    effects.run(self)
    if acknowledgesCancel { _ = setRunningOrNotifyCancel() }
    return true
  }

  /// Cancels the task; with `terminatingWorker`, a task that is already running is stopped too:
  /// its worker gets SIGTERM (SIGKILL after the grace period) and is replaced, as pebble does.
  /// Returns true when the future is (now) cancelled.
  ///
  /// A future that returns true never produces a value. A task that a worker holds queued
  /// behind the one it runs (see `jobsPerWorker`) cannot be stopped without stopping that other
  /// task: then this returns false and the task runs (set `jobsPerWorker` to 1 to avoid it).
  @discardableResult
  public func cancel(terminatingWorker: Bool) -> Bool {
    if cancel() || !terminatingWorker { return isCancelled }
    guard state.withLock({ $0.phase == .running }),
      let finishJob = stopWorker?.stopWorker(running: ObjectIdentifier(self))
    else {
      return isCancelled
    }
    if let effects = state.withLock({ $0.cancelRunning() }) { effects.run(self) }
    finishJob()
    return true
  }

  /// True once cancelled.
  public var isCancelled: Bool { state.withLock { $0.phase.isCancelled } }
  /// True while a worker has the task.
  public var isRunning: Bool { state.withLock { $0.phase == .running } }
  /// True once finished or cancelled.
  public var isDone: Bool { state.withLock { $0.phase.isDone } }

  /// Calls `callback` with this future once it is done (at once if it already is), on the thread
  /// that finishes it. An error thrown by the callback is reported through ``ProcessPoolLog`` and
  /// does not propagate.
  public func addDoneCallback(_ callback: @escaping @Sendable (ProcessFuture<Output>) throws -> Void) {
    let runNow = state.withLock { state -> Bool in
      if state.phase.isDone { return true }
      state.callbacks.append(callback)
      return false
    }
    if runNow { FutureEffects<Output>.invoke(callback, self) }
  }

  /// The state, as CPython prints it: `ProcessFuture<Int>(state=finished returned Int)`.
  public var description: String {
    let phase = state.withLock { state -> String in
      switch state.phase {
      case .pending: return "pending"
      case .running: return "running"
      case .cancelled, .cancelledAndNotified: return "cancelled"
      case .finished:
        switch state.outcome {
        case .success(let value)?: return "finished returned \(type(of: value))"
        case .failure(let error)?: return "finished raised \(type(of: error))"
        case nil: return "finished"
        }
      }
    }
    return "ProcessFuture<\(Output.self)>(state=\(phase))"
  }
}
