/// How far a `map` or a set of futures has got: items finished with a value, items that failed
/// (threw, crashed, timed out or were cancelled), and the total when it is known.
///
/// ```swift
/// let results = try pool.map(Render(), frames, chunksize: 4) { progress in
///   print("\r\(progress)", terminator: "")      // "36/120 (1 failed)"
/// }
/// ```
///
/// Counting costs one atomic addition per finished `map` chunk (or future) and no message: leave
/// it on.
public struct ProcessPoolProgress: Sendable, Hashable, Codable, CustomStringConvertible {
  /// Items finished with a value.
  public var completed: Int
  /// Items that finished with an error, including cancelled ones.
  public var failed: Int
  /// How many items there are, when known (a `map` over a `Collection`, or a lazy input once it
  /// has run out).
  public var total: Int?

  /// Creates a progress value.
  public init(completed: Int = 0, failed: Int = 0, total: Int? = nil) {
    self.completed = completed
    self.failed = failed
    self.total = total
  }

  /// Items finished either way.
  public var finished: Int { completed + failed }

  /// `finished / total`, from 0 to 1, when the total is known.
  public var fractionFinished: Double? {
    guard let total else { return nil }
    return total == 0 ? 1 : Double(finished) / Double(total)
  }

  /// Whether every item has finished (false while the total is unknown).
  public var isFinished: Bool { total.map { finished >= $0 } ?? false }

  /// "37/120 (1 failed)", or "37 (1 failed)" while the total is unknown.
  public var description: String {
    (total.map { "\(finished)/\($0)" } ?? "\(finished)") + (failed > 0 ? " (\(failed) failed)" : "")
  }

  /// A stream of progress updates for futures already submitted: the current value at once, then
  /// one per future that finishes (a slow reader sees the latest), ending when all have.
  ///
  /// ```swift
  /// let futures = try inputs.map { try pool.submit(Parse(), $0) }
  /// for await progress in ProcessPoolProgress.updates(of: futures) { bar.show(progress) }
  /// ```
  public static func updates<Output>(of futures: some Sequence<ProcessFuture<Output>>) -> AsyncStream<
    ProcessPoolProgress
  > {
    let counter = ProgressCounter(total: nil, handler: nil)
    let stream = counter.updates()
    counter.track(Array(futures))
    return stream
  }

  /// Calls `handler` with the progress of futures already submitted: at once, then once per
  /// future that finishes (on the thread that finishes it: keep it short).
  public static func observe<Output>(
    _ futures: some Sequence<ProcessFuture<Output>>, _ handler: @escaping @Sendable (ProcessPoolProgress) -> Void
  ) {
    ProgressCounter(total: nil, handler: handler).track(Array(futures))
  }
}
