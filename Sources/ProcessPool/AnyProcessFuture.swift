/// A ``ProcessFuture`` of any output type, so futures of different tasks can be waited for
/// together with ``asCompleted(_:timeout:)->AnyAsCompletedSequence`` and
/// ``wait(_:timeout:returnWhen:)->(Set<AnyProcessFuture>,_)``.
///
/// ```swift
/// let count = try pool.submit(CountRows(), path)      // ProcessFuture<Int>
/// let title = try pool.submit(ReadTitle(), path)      // ProcessFuture<String>
/// for try await future in asCompleted([AnyProcessFuture(count), AnyProcessFuture(title)]) {
///     if let rows = future.typed(as: Int.self) { print("rows:", try await rows.value) }
///     if let text = future.typed(as: String.self) { print("title:", try await text.value) }
/// }
/// ```
///
/// Two values are equal when they wrap the same future.
public struct AnyProcessFuture: Sendable, Hashable, CustomStringConvertible {
  let base: any ErasedProcessFuture

  /// Wraps `future`.
  public init<Output>(_ future: ProcessFuture<Output>) { base = future }

  /// The wrapped future with its output type, or nil when its output is not `Output`.
  public func typed<Output>(as _: Output.Type = Output.self) -> ProcessFuture<Output>? {
    base as? ProcessFuture<Output>
  }

  /// The output type of the wrapped future.
  public var outputType: any Any.Type { base.outputType }

  /// The task's output as `any Sendable` (see ``ProcessFuture/value``); use ``typed(as:)`` for
  /// the typed value.
  public var value: any Sendable {
    get async throws { try await base.erasedValue() }
  }

  /// True once cancelled.
  public var isCancelled: Bool { base.isCancelled }
  /// True while a worker has the task.
  public var isRunning: Bool { base.isRunning }
  /// True once finished or cancelled.
  public var isDone: Bool { base.isDone }

  /// Cancels the task if it has not started (see ``ProcessFuture/cancel()``).
  @discardableResult
  public func cancel() -> Bool { base.cancel() }

  /// Cancels the task, stopping its worker if it runs (see ``ProcessFuture/cancel(terminatingWorker:)``).
  @discardableResult
  public func cancel(terminatingWorker: Bool) -> Bool { base.cancel(terminatingWorker: terminatingWorker) }

  /// The wrapped future's description.
  public var description: String { base.description }

  /// Whether both wrap the same future.
  public static func == (lhs: Self, rhs: Self) -> Bool { lhs.base === rhs.base }

  /// Hashes the wrapped future's identity.
  public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(base)) }
}

/// What `wait` and `asCompleted` need of a future, whatever its output type.
protocol CompletionObservable: Sendable {
  /// Done as `wait` and `asCompleted` count it: finished, or cancelled and seen by the pool.
  var isCompleted: Bool { get }
  /// Finished with an error (not cancelled).
  var hasFailed: Bool { get }
  /// Calls `watcher` once the future is completed; false if it already is.
  func watchCompletion(_ id: Int, _ watcher: @escaping @Sendable () -> Void) -> Bool
  func stopWatching(_ id: Int)
}

/// A `ProcessFuture` with its output type erased.
protocol ErasedProcessFuture: AnyObject, CompletionObservable, CustomStringConvertible {
  var outputType: any Any.Type { get }
  var isCancelled: Bool { get }
  var isRunning: Bool { get }
  var isDone: Bool { get }
  func cancel() -> Bool
  func cancel(terminatingWorker: Bool) -> Bool
  func erasedValue() async throws -> any Sendable
}

extension ProcessFuture: ErasedProcessFuture {
  var outputType: any Any.Type { Output.self }

  func erasedValue() async throws -> any Sendable { try await value(isolation: nil) }
}

extension AnyProcessFuture: CompletionObservable {
  var isCompleted: Bool { base.isCompleted }
  var hasFailed: Bool { base.hasFailed }
  func watchCompletion(_ id: Int, _ watcher: @escaping @Sendable () -> Void) -> Bool {
    base.watchCompletion(id, watcher)
  }
  func stopWatching(_ id: Int) { base.stopWatching(id) }
}
