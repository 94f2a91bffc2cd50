/// Work that runs once in every new worker process before it takes any task, for example to
/// load a model or open a file that every task then uses.
///
/// If it throws, the pool is broken (as CPython does): pending work fails with
/// ``ProcessPoolError/Code/brokenPool`` and the message carries the initializer's error.
///
/// ```swift
/// struct LoadModel: WorkerInitializer {
///     var path: String
///     func initialize() async throws { try Model.loadShared(from: path) }
/// }
/// let pool = try ProcessPoolExecutor(maxWorkers: 4, initializer: LoadModel(path: "model.bin"))
/// ```
public protocol WorkerInitializer: Codable, Sendable {
  /// Runs in the worker process, once, before its first task.
  func initialize() async throws
}
