import CProcessPoolShims
import Synchronization

/// What the pool (and `wait`/`asCompleted`) do to a future. Internal: only the pool finishes one.
extension ProcessFuture {
  /// A future already finished with `outcome` (used for work that fails before it is queued).
  convenience init(finished outcome: Result<Output, any Error>) {
    self.init()
    _ = complete(outcome)
  }

  /// Finishes the future; false when it was already done (its first outcome is kept).
  @discardableResult
  func complete(_ outcome: Result<Output, any Error>) -> Bool {
    guard let effects = state.withLock({ $0.complete(outcome) }) else { return false }
    effects.run(self)
    return true
  }

  /// The pool takes the task; false means it was cancelled and must be skipped.
  func setRunningOrNotifyCancel() -> Bool {
    if setRunning() { return true }
    notifyCancel()
    return false
  }

  /// Pending becomes running; false when it was cancelled or is done. Changes state only (the
  /// pool calls it under its lock).
  func setRunning() -> Bool { state.withLock { $0.setRunning() } }

  /// Cancelled becomes cancelled-and-notified, and its watchers are told.
  func notifyCancel() { state.withLock { $0.notifyCancel() }?.run(self) }

  /// Blocks until done or `timeout`; the outcome, or a `timedOut` error.
  func waitForOutcome(timeout: Duration?) throws -> Result<Output, any Error> {
    if let outcome = state.withLock({ $0.outcome }) { return outcome }
    // A done-callback runs on the I/O thread that finishes futures: waiting there for another
    // future would stop every result from arriving, this one's too.
    if pp_is_io_thread() != 0 {
      throw ProcessPoolError(
        .wouldDeadlock,
        "a blocking wait for an unfinished future on the pool's I/O thread (in a done-callback) would stop every "
          + "result from arriving; await `value` in a Task, or wait from another thread")
    }
    let gate = ConditionLock()
    let id = state.withLock { $0.allocateWaiterID() }
    let flag = Mutex(false)
    let watching = state.withLock { state -> Bool in
      guard state.outcome == nil else { return false }
      state.wakeups[id] = {
        gate.withLock {
          flag.withLock { $0 = true }
          gate.broadcast()
        }
      }
      return true
    }
    if watching {
      let deadline = timeout.map { ContinuousClock.Instant.deadline(after: $0) }
      _ = gate.withLock { gate.wait(until: deadline) { flag.withLock { $0 } || self.isDone } }
      state.withLock { _ = $0.wakeups.removeValue(forKey: id) }
    }
    if let outcome = state.withLock({ $0.outcome }) { return outcome }
    throw ProcessPoolError(.timedOut, "the future did not finish within \(timeout.map { "\($0)" } ?? "the wait")")
  }

  /// The outcome if finished (no waiting).
  var outcome: Result<Output, any Error>? { state.withLock { $0.outcome } }
}
