import CProcessPoolShims

#if canImport(Glibc)
  import Glibc
#endif

/// Runs ``ProcessTask`` values in worker processes (this executable, started again) and hands
/// back ``ProcessFuture`` values: Python's `concurrent.futures.ProcessPoolExecutor` for Swift.
///
/// ```swift
/// let pool = try ProcessPoolExecutor(maxWorkers: 4)
/// let future = try pool.submit(Countdown(), 5_000_000)
/// print(try await future.value)
/// await pool.shutdown()
/// ```
///
/// Workers start on demand, idle ones are reused first, and there are never more than
/// `maxWorkers`. A worker that crashes fails only the task it was running and is replaced
/// (see ``CrashPolicy``). Dropping the last reference without ``shutdown(wait:cancelFutures:)``
/// lets submitted work finish and then stops every worker; at process exit, pending work is
/// waited for.
public final class ProcessPoolExecutor: Sendable {
  let core: PoolCore

  /// Creates a pool.
  /// - Parameters:
  ///   - maxWorkers: At most this many worker processes; default: the CPUs this process may use.
  ///   - maxTasksPerChild: Replace a worker after it has run this many tasks (nil: never).
  ///   - taskTimeout: Fail a task that runs longer, and stop its worker (nil: no limit).
  ///   - crashPolicy: What a worker crash does to the rest of the pool.
  ///   - initializer: Runs once in every new worker before its first task.
  /// - Throws: ``ProcessPoolError/Code/invalidArgument`` for a count below 1.
  public convenience init(
    maxWorkers: Int? = nil, maxTasksPerChild: Int? = nil, taskTimeout: Duration? = nil,
    crashPolicy: CrashPolicy = .replaceWorker, initializer: (any WorkerInitializer)? = nil
  ) throws {
    var configuration = Configuration()
    if let maxWorkers { configuration.maxWorkers = maxWorkers }
    configuration.maxTasksPerChild = maxTasksPerChild
    configuration.taskTimeout = taskTimeout
    configuration.crashPolicy = crashPolicy
    try self.init(configuration: configuration, initializer: initializer)
  }

  /// Creates a pool from a full configuration.
  public init(configuration: Configuration, initializer: (any WorkerInitializer)? = nil) throws {
    try configuration.validate()
    try WorkerSpawner.checkLocalWorkersCanStart(configuration)
    var initializerPayload: [UInt8]?
    if let initializer {
      initializerPayload = try Self.typedValueHeader(initializer)
    }
    core = try PoolCore(configuration: configuration, initializerPayload: initializerPayload)
  }

  deinit {
    // A forked child's copy of the pool is its parent's: leave it alone.
    guard core.belongsToThisProcess else { return }
    // Not a kill: queued work finishes, then the workers stop (the I/O thread keeps the core).
    core.transition { state, effects in state.shutdown(cancelFutures: false, now: .now, &effects) }
  }

  /// The configuration the pool runs with.
  public var configuration: Configuration { core.configuration }

  /// Schedules `task.run(input)` in a worker.
  ///
  /// Never blocks on a busy worker. Throws at the call site when the pool is shut down or
  /// broken, when the task's type cannot be found by name in a worker, or when the task or the
  /// input cannot be encoded.
  ///
  /// ```swift
  /// let future = try pool.submit(Countdown(), 10_000_000)
  /// let result = try await future.value
  /// ```
  ///
  /// - Parameters:
  ///   - task: The task to run. Its type must be findable by name in the worker (declared at file
  ///     scope or in a type, not private or inside a function).
  ///   - input: The value passed to `task.run(_:)` in the worker.
  ///   - timeout: This task's own time limit (overrides the pool's `taskTimeout`). Must be
  ///     positive (else ``ProcessPoolError/Code/invalidArgument`` is thrown); limits beyond about
  ///     68 years (`.seconds(Int64.max)`) mean no limit.
  /// - Returns: A future for the task's output.
  public func submit<T: ProcessTask>(_ task: T, _ input: T.Input, timeout: Duration? = nil) throws -> ProcessFuture<
    T.Output
  > {
    if let timeout, timeout <= .zero {
      throw ProcessPoolError(.invalidArgument, "a task's timeout must be positive (got \(timeout))")
    }
    var payload = try Frame.emptyHeader + Self.typedValueHeader(task)
    payload.appendLittleEndian(UInt32(1))
    // A large `[UInt8]` for local workers stays where it is until it is copied into the
    // worker's shared memory: the frame holds everything before its bytes.
    let tail = configuration.tail(for: input)
    do {
      try payload.withByteWriter { writer in
        writer.byteLimit = configuration.messageLimit
        if tail.isEmpty {
          try writer.appendBlock(input)
        } else {
          try writer.appendBytesBlockHead(count: tail.count)
        }
      }
    } catch {
      throw ProcessPoolError.encoding(of: "the input of \(T.self)", error)
    }
    let future = ProcessFuture<T.Output>(
      acknowledgesCancel: true, stopWorker: core.stopWorkerHook, cancellation: configuration.cancellation)
    let job = Job(
      frame: consume payload, tail: tail, sink: TaskSink(future: future),
      timeout: timeout ?? configuration.taskTimeout)
    try enqueue(CollectionOfOne(job))
    return future
  }

  /// Queues jobs under one lock (one dispatch pass for the lot); all or none.
  func enqueue(_ jobs: some Collection<Job>) throws(ProcessPoolError) {
    try core.enqueue(jobs)
  }

  /// The start of a `run` or `initialize` payload: the value's type name (checked to resolve in
  /// a worker) and its encoding.
  static func typedValueHeader<T: Codable>(_ value: T) throws(ProcessPoolError) -> [UInt8] {
    let name = try TaskTypeRegistry.name(for: T.self)
    var payload: [UInt8] = []
    payload.appendBlock(Array(name.utf8))
    do {
      try payload.withByteWriter { writer in
        writer.byteLimit = Frame.sendLimit.load(ordering: .relaxed)
        try writer.appendBlock(value)
      }
    } catch {
      throw ProcessPoolError.encoding(of: "the value of \(T.self)", error)
    }
    return payload
  }

  /// Stops taking work. Later submits throw ``ProcessPoolError/Code/shutDown``.
  /// - Parameters:
  ///   - wait: Return only once all work is done and every worker has exited and been reaped.
  ///     With `false` the pool finishes in the background.
  ///   - cancelFutures: Cancel the work that has not started.
  public func shutdown(wait: Bool = true, cancelFutures: Bool = false) async {
    guard core.belongsToThisProcess else { return }
    core.transition { state, effects in state.shutdown(cancelFutures: cancelFutures, now: .now, &effects) }
    if wait { await core.waitUntilStopped() }
  }

  /// Blocking form of ``shutdown(wait:cancelFutures:)`` for synchronous code.
  ///
  /// - Parameters:
  ///   - cancelFutures: Cancel the work that has not started.
  ///   - isolation: The caller's actor (left to its default). A map made on it whose input is
  ///     pulled there is pulled to its end by this call, as the actor cannot do it while the
  ///     call blocks it.
  @available(*, noasync, message: "use `await pool.shutdown()` in async code")
  public func shutdownAndWait(cancelFutures: Bool = false, isolation: (any Actor)? = #isolation) {
    guard core.belongsToThisProcess else { return }
    core.transition { state, effects in state.shutdown(cancelFutures: cancelFutures, now: .now, &effects) }
    if let isolation { core.drainSources(pulledOn: isolation) }
    core.blockUntilStopped()
  }

  /// Forced shutdown: sends SIGTERM to every worker, cancels queued work; running work fails
  /// with ``ProcessPoolError/Code/brokenPool``. The pool takes no more work. A no-op on workers
  /// that never started or already died.
  public func terminateWorkers() {
    guard core.belongsToThisProcess else { return }
    core.transition { state, effects in state.forceShutdown(signal: SIGTERM, now: .now, &effects) }
  }

  /// Like ``terminateWorkers()`` with SIGKILL.
  public func killWorkers() {
    guard core.belongsToThisProcess else { return }
    core.transition { state, effects in state.forceShutdown(signal: SIGKILL, now: .now, &effects) }
  }

  /// Counters describing the pool now.
  public var statistics: Statistics { core.read { $0.statisticsSnapshot } }

  /// The pids of the live workers (for diagnostics and tests). Workers are started by the pool's
  /// I/O thread, never by `submit`, so the worker for a task just submitted may not be listed yet.
  /// A worker retired by ``ProcessPoolExecutor/Configuration/maxTasksPerChild`` is listed until it has exited.
  public var workerPIDs: [Int32] { core.read { $0.workerPIDs } }
}
