/// A unit of work that runs in a worker process.
///
/// A task is a `Codable` value: its stored properties are what it "captures", and they travel to
/// the worker together with the input. The worker finds the task's type by its mangled name, so
/// the type must be visible across the module (internal, public, nested or generic types work;
/// `private`, `fileprivate` and function-local types do not and are rejected at `submit`).
///
/// ```swift
/// struct Countdown: ProcessTask {
///     func run(_ n: Int) async throws -> Int {
///         var n = n
///         while n > 0 { n -= 1 }
///         return n
///     }
/// }
/// ```
public protocol ProcessTask: Codable, Sendable {
  /// The value sent to the worker with each call.
  associatedtype Input: Codable & Sendable
  /// The value the worker sends back.
  associatedtype Output: Codable & Sendable

  /// Does the work in the worker process. A thrown error reaches the caller: as the same type
  /// when that type is `Codable` and visible by name, otherwise as ``ProcessPoolError/Code/remote``.
  func run(_ input: Input) async throws -> Output

  /// Runs ``run(_:)`` over one chunk of inputs in a worker. An implementation detail: do not
  /// implement or call it. It is a requirement only so that its default implementation is
  /// compiled for each task type where the type conforms (no generic dispatch per item).
  func _runChunk(_ chunk: inout _ProcessTaskChunk) async
}
