/// A point on the continuous clock whose layout this module knows at compile time.
///
/// `ContinuousClock.Instant` is a resilient type: its size is unknown outside the standard
/// library, so a struct that holds one (a worker slot, its phase) is copied and destroyed through
/// runtime value witnesses, which the scheduler paid for on every dispatch pass. `Duration` is
/// frozen, so this is a plain 16-byte value.
struct MonotonicInstant: Comparable, Hashable, Sendable {
  /// Time since the first instant this process took.
  let sinceOrigin: Duration

  private static let origin = ContinuousClock.now

  static var now: MonotonicInstant { MonotonicInstant(sinceOrigin: origin.duration(to: .now)) }

  /// `duration` is clamped to `Duration.longestMeasured`, so a deadline from any duration the
  /// user passes (`.seconds(Int64.max)`) is representable and far enough to mean "never".
  func advanced(by duration: Duration) -> MonotonicInstant {
    MonotonicInstant(sinceOrigin: sinceOrigin + duration.clampedToLongestMeasured)
  }

  func duration(to other: MonotonicInstant) -> Duration { other.sinceOrigin - sinceOrigin }

  static func < (lhs: MonotonicInstant, rhs: MonotonicInstant) -> Bool { lhs.sinceOrigin < rhs.sinceOrigin }
}
