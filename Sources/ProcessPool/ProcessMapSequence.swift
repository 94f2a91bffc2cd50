/// The ordered results of ``ProcessPoolExecutor/map(_:_:chunksize:buffersize:timeout:progress:)``.
///
/// Iterate it once. A failing item throws at its position and `next()` may be called again for
/// the following items; after a timeout the iteration is over.
public struct ProcessMapSequence<Output: Codable & Sendable>: AsyncSequence {
  /// One output per input, in input order.
  public typealias Element = Output
  let state: any MapStateProtocol<Output>
  let counter: ProgressCounter

  init(state: any MapStateProtocol<Output>, progress: ProgressCounter) {
    self.state = state
    self.counter = progress
  }

  /// Progress updates while the map runs, readable from another task: the current value at once,
  /// then one per finished item (a slow reader sees the latest), ending when every item has
  /// finished or the map is abandoned.
  ///
  /// ```swift
  /// let results = try pool.map(Render(), frames)
  /// let bar = Task { for await p in results.progress { draw(p) } }
  /// for try await frame in results { save(frame) }
  /// ```
  public var progress: AsyncStream<ProcessPoolProgress> { counter.updates() }

  /// The progress now.
  public var currentProgress: ProcessPoolProgress { counter.snapshot }

  /// The iterator; make only one (the outputs are yielded once).
  public func makeAsyncIterator() -> Iterator { Iterator(state: state) }

  /// Yields the outputs in input order.
  public struct Iterator: AsyncIteratorProtocol {
    let state: any MapStateProtocol<Output>

    /// The next output in input order, or nil after the last. Throws the item's own error at
    /// its position (call again for the next item), or ``ProcessPoolError/Code/timedOut``.
    public mutating func next() async throws -> Output? {
      try await state.next()
    }
  }
}

/// The map's state with the task type erased.
protocol MapStateProtocol<Output>: AnyObject {
  associatedtype Output: Sendable
  func next() async throws -> Output?
}

/// The futures of a map in input order, the chunks still to pull (with a `buffersize`), and the
/// deadline. Cancels what is left when the iteration ends early (this object is released).
final class MapState<T: ProcessTask>: MapStateProtocol {
  typealias Output = T.Output
  private let source: ChunkSource<T>
  private let buffersize: Int?
  private let deadline: ContinuousClock.Instant?
  /// Submitted chunks not yet fully yielded, oldest first.
  private var chunks: [[ProcessFuture<Output>]] = []
  private var position = 0
  private var finished = false

  init(source: ChunkSource<T>, buffersize: Int?, timeout: Duration?) {
    self.source = source
    self.buffersize = buffersize
    self.deadline = timeout.map { ContinuousClock.now.advanced(by: $0) }
  }

  deinit {
    cancelRemaining()
    // Inputs never pulled will not finish: end the progress streams.
    source.progress.end()
  }

  /// Submits chunks up to the buffer size (everything without one).
  func fill() throws {
    while buffersize.map({ chunks.count < $0 }) ?? true, let chunk = try source.submitNext() {
      chunks.append(chunk)
    }
  }

  func next() async throws -> Output? {
    guard !finished else { return nil }
    while let first = chunks.first, position >= first.count {
      chunks.removeFirst()
      position = 0
      try fill()
    }
    guard let chunk = chunks.first else {
      finished = true
      return nil
    }
    let future = chunk[position]
    position += 1
    do {
      return try await value(of: future)
    } catch let error as MapTimeout {
      finished = true
      cancelRemaining()
      throw error.error
    } catch is CancellationError {
      finished = true
      cancelRemaining()
      throw CancellationError()
    }
  }

  private struct MapTimeout: Error { let error: ProcessPoolError }

  /// The future's value, or `MapTimeout` at the map's deadline (kept apart from a timeout the
  /// task itself threw).
  private func value(of future: ProcessFuture<Output>) async throws -> Output {
    guard let deadline else { return try await future.value }
    if future.outcome == nil {
      let signal = CompletionSignal()
      let id = signal.nextID()
      if future.watchCompletion(id, { signal.fire() }) {
        defer { future.stopWatching(id) }
        while !future.isCompleted && deadline > .now && !Task.isCancelled {
          await signal.wait(until: deadline)
        }
      }
      if future.outcome == nil {
        try Task.checkCancellation()
        throw MapTimeout(error: ProcessPoolError(.timedOut, "map did not finish within its timeout"))
      }
    }
    return try future.outcome!.get()
  }

  private func cancelRemaining() {
    for chunk in chunks {
      for future in chunk { future.cancel() }
    }
    chunks = []
  }
}
