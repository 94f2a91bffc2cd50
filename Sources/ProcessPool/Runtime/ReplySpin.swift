/// Whether the I/O thread looks at the busy workers' reply rings a little longer before it
/// sleeps. A reply that comes while it looks is taken without the worker's `wake` frame, the
/// thread's wake-up from `epoll_wait` and the read of that frame: a round trip of a small task
/// saves a system call on each side and a sleep. Looking costs a processor, so it is bounded
/// (`budget`, yielding to any other runnable thread all along) and adaptive: a look that found
/// nothing makes the next ones be skipped, twice as many each time in a row, so a pool whose
/// tasks take long (or whose caller submits rarely) pays almost nothing.
struct ReplySpin {
  /// How long one look lasts at most: about a small task's round trip on a busy machine.
  static let budget = Duration.microseconds(50)
  /// The most sleeps skipped after looks that found nothing.
  static let longestSkip = 64

  /// Sleeps still to go without a look.
  private var skip = 0
  /// Sleeps skipped after the last look that found nothing.
  private var penalty = 0

  /// Looks at `hasReplies` until it is true (true) or the budget is spent (false); false at once
  /// while looks are being skipped.
  mutating func look(until hasReplies: () -> Bool) -> Bool {
    if skip > 0 {
      skip -= 1
      return false
    }
    let deadline = MonotonicInstant.now.advanced(by: Self.budget)
    while true {
      if hasReplies() {
        penalty = 0
        return true
      }
      if MonotonicInstant.now >= deadline { break }
      Syscall.yieldProcessor()
    }
    penalty = min(max(1, penalty * 2), Self.longestSkip)
    skip = penalty
    return false
  }
}
