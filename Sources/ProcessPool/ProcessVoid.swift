/// `Void` for tasks: the output of a task that returns nothing (or the input of one that takes
/// nothing). `Void` itself is not `Codable`, so it cannot cross to a worker.
///
/// ```swift
/// struct Touch: ProcessTask {
///     func run(_ path: String) async throws -> ProcessVoid {
///         try touch(path)
///         return ProcessVoid()
///     }
/// }
///
/// _ = try await pool.submit(Touch(), "/tmp/flag").value   // waits, and rethrows its error
/// ```
///
/// It carries no data. ``ProcessPoolExecutor/submit(_:)`` submits a task whose input is
/// `ProcessVoid` without one.
public struct ProcessVoid: Codable, Sendable, Hashable, CustomStringConvertible {
  /// The one value.
  public init() {}

  /// Reads nothing.
  public init(from decoder: any Decoder) throws {}

  /// Writes nothing.
  public func encode(to encoder: any Encoder) throws {}

  /// `()`, as `Void` prints.
  public var description: String { "()" }
}

extension ProcessPoolExecutor {
  /// Submits a task that takes no input (its `Input` is ``ProcessVoid``).
  ///
  /// ```swift
  /// struct ReadConfiguration: ProcessTask {
  ///     func run(_: ProcessVoid) async throws -> [String: String] { loadConfiguration() }
  /// }
  /// let settings = try await pool.submit(ReadConfiguration()).value
  /// ```
  public func submit<T: ProcessTask>(_ task: T) throws -> ProcessFuture<T.Output> where T.Input == ProcessVoid {
    try submit(task, ProcessVoid())
  }
}
