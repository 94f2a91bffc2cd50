@testable import ProcessPool

/// Futures made directly in each of CPython's states (util.py's PENDING_FUTURE and friends).
enum Fixture {
  static func pending() -> ProcessFuture<Int> { ProcessFuture() }

  static func running() -> ProcessFuture<Int> {
    let future = ProcessFuture<Int>()
    _ = future.setRunningOrNotifyCancel()
    return future
  }

  /// Cancelled, not yet seen by a pool: `wait` and `asCompleted` do not count it as done.
  static func cancelled() -> ProcessFuture<Int> {
    let future = ProcessFuture<Int>()
    future.cancel()
    return future
  }

  static func cancelledAndNotified() -> ProcessFuture<Int> {
    let future = cancelled()
    _ = future.setRunningOrNotifyCancel()
    return future
  }

  static func failed(_ error: any Error = DivisionByZero(dividend: 1)) -> ProcessFuture<Int> {
    ProcessFuture(finished: .failure(error))
  }

  static func finished(_ value: Int = 42) -> ProcessFuture<Int> { ProcessFuture(finished: .success(value)) }
}
