/// The wake-up of one async waiter, kept inside its owner's locked state: a `fire` resumes the
/// parked waiter, or makes the next wait return at once.
struct WakeSlot {
  private var fired = false
  private var continuation: CheckedContinuation<Void, Never>?

  /// Marks it fired; returns the waiter to resume (after the lock is released), if one is parked.
  mutating func fire() -> CheckedContinuation<Void, Never>? {
    fired = true
    defer { continuation = nil }
    return continuation
  }

  /// Parks `continuation`, unless it fired already or the task is cancelled: then true, and the
  /// caller resumes it (after the lock is released).
  mutating func park(_ continuation: CheckedContinuation<Void, Never>) -> Bool {
    if fired || Task.isCancelled {
      fired = false
      return true
    }
    self.continuation = continuation
    return false
  }

  /// Forgets a fire that came after the wait ended.
  mutating func reset() { fired = false }
}
