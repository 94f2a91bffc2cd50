/// Runs `body` with a new pool and always shuts the pool down before returning: Python's
/// `with ProcessPoolExecutor() as executor:`, in the shape of `withTaskGroup`.
///
/// ```swift
/// let total = try await withProcessPool(maxWorkers: 4) { pool in
///     try await pool.submit(Countdown(), 5_000_000).value
/// }
/// ```
///
/// - When `body` returns, the pool finishes the work still queued and every worker exits
///   (``ProcessPoolExecutor/shutdown(wait:cancelFutures:)`` with `wait: true`) before the
///   result is returned.
/// - When `body` throws, work that has not started is cancelled, running work finishes, the
///   workers exit, and the error is rethrown.
/// - When the enclosing Swift task is cancelled, running work is stopped at once
///   (``ProcessPoolExecutor/terminateWorkers()``: SIGTERM, then SIGKILL after
///   ``ProcessPoolExecutor/Configuration/terminationGracePeriod``): its futures fail with
///   ``ProcessPoolError/Code/cancelled``, queued work is cancelled, and the pool takes no more.
///
/// Do not let the pool escape `body`: it is shut down when `body` ends.
///
/// - Parameters:
///   - maxWorkers: At most this many worker processes; default: the CPUs this process may use.
///   - maxTasksPerChild: Replace a worker after it has run this many tasks (nil: never).
///   - taskTimeout: Fail a task that runs longer, and stop its worker (nil: no limit).
///   - crashPolicy: What a worker crash does to the rest of the pool.
///   - initializer: Runs once in every new worker before its first task.
///   - isolation: Where `body` runs: the caller's actor, by default.
///   - body: Uses the pool; its result is returned.
/// - Throws: What `body` throws, or the errors of
///   ``ProcessPoolExecutor/init(maxWorkers:maxTasksPerChild:taskTimeout:crashPolicy:initializer:)``.
public func withProcessPool<Result>(
  maxWorkers: Int? = nil, maxTasksPerChild: Int? = nil, taskTimeout: Duration? = nil,
  crashPolicy: ProcessPoolExecutor.CrashPolicy = .replaceWorker, initializer: (any WorkerInitializer)? = nil,
  isolation: isolated (any Actor)? = #isolation,
  _ body: (ProcessPoolExecutor) async throws -> Result
) async throws -> Result {
  var configuration = ProcessPoolExecutor.Configuration()
  if let maxWorkers { configuration.maxWorkers = maxWorkers }
  configuration.maxTasksPerChild = maxTasksPerChild
  configuration.taskTimeout = taskTimeout
  configuration.crashPolicy = crashPolicy
  return try await withProcessPool(configuration: configuration, initializer: initializer, isolation: isolation, body)
}

/// ``withProcessPool(maxWorkers:maxTasksPerChild:taskTimeout:crashPolicy:initializer:isolation:_:)``
/// with a full ``ProcessPoolExecutor/Configuration``.
///
/// ```swift
/// var configuration = ProcessPoolExecutor.Configuration()
/// configuration.jobsPerWorker = 1
/// try await withProcessPool(configuration: configuration) { pool in
///     for try await row in try pool.map(Render(), rows) { print(row) }
/// }
/// ```
///
/// - Parameters:
///   - configuration: Every setting of the pool.
///   - initializer: Runs once in every new worker before its first task.
///   - isolation: Where `body` runs: the caller's actor, by default.
///   - body: Uses the pool; its result is returned.
public func withProcessPool<Result>(
  configuration: ProcessPoolExecutor.Configuration, initializer: (any WorkerInitializer)? = nil,
  isolation: isolated (any Actor)? = #isolation,
  _ body: (ProcessPoolExecutor) async throws -> Result
) async throws -> Result {
  let pool = try ProcessPoolExecutor(configuration: configuration, initializer: initializer)
  let result: Result
  do {
    result = try await withTaskCancellationHandler(
      operation: { try await body(pool) },
      onCancel: { pool.cancelAllWork() }, isolation: isolation)
  } catch {
    await pool.shutdown(wait: true, cancelFutures: true)
    await pool.core.ioThreadReturned()
    throw error
  }
  await pool.shutdown(wait: true)
  // Every descriptor of the pool is closed when this returns, not soon after.
  await pool.core.ioThreadReturned()
  return result
}

extension ProcessPoolExecutor {
  /// What cancelling the task around `withProcessPool` does: running work fails as cancelled
  /// (not as a broken pool), then ``terminateWorkers()`` stops the workers (SIGTERM, SIGKILL
  /// after the grace period) and cancels the queue.
  func cancelAllWork() {
    core.transition { state, effects in
      state.failRunningWork(
        ProcessPoolError(.cancelled, "the task running the pool was cancelled; its worker was stopped"), &effects)
    }
    terminateWorkers()
  }
}
