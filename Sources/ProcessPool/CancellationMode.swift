/// What cancelling the Swift task that awaits a future (or iterates a map) does to work that
/// is already running in a worker.
///
/// ```swift
/// // This await stops its task's worker when the awaiting task is cancelled.
/// let value = try await future.value(cancelling: .terminatingWorker)
///
/// // Every future and map of this pool does so.
/// var configuration = ProcessPoolExecutor.Configuration()
/// configuration.cancellation = .terminatingWorker
/// ```
public enum CancellationMode: Sendable, Hashable {
  /// The default: work that has not started is cancelled; a running task is left to finish
  /// (its result is dropped). Cheap, and no worker is lost.
  case pendingOnly
  /// Work that has not started is cancelled, and a running task is stopped too: its worker
  /// gets SIGTERM (SIGKILL after the grace period) and is replaced, as
  /// ``ProcessFuture/cancel(terminatingWorker:)`` does. The future fails with
  /// ``ProcessPoolError/Code/cancelled``.
  case terminatingWorker
}
