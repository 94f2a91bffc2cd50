extension Duration {
  /// The longest time the pool measures: 2^31 seconds (about 68 years). Every deadline is taken
  /// from a duration clamped to this, so `.seconds(Int64.max)` means "no practical limit" and no
  /// later conversion (poll's milliseconds, a `timespec`, a sleep's nanoseconds) can overflow.
  static let longestMeasured = Duration.seconds(Int64(Int32.max))

  /// This duration clamped to `-longestMeasured...longestMeasured` (saturating, never trapping).
  var clampedToLongestMeasured: Duration { min(max(self, .zero - .longestMeasured), .longestMeasured) }
}

extension ContinuousClock.Instant {
  /// The instant `timeout` from now, with `timeout` clamped to ``Swift/Duration/longestMeasured``.
  static func deadline(after timeout: Duration) -> ContinuousClock.Instant {
    ContinuousClock.now.advanced(by: timeout.clampedToLongestMeasured)
  }
}
