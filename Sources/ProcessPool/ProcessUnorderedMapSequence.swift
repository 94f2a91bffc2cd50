/// The results of ``ProcessPoolExecutor/mapUnordered(_:_:chunksize:buffersize:timeout:taskTimeout:progress:isolation:)``
/// in the order they finish, each with its input's position.
///
/// Iterate it once. A failing item throws at its turn and `next()` may be called again for the
/// rest; after a timeout the iteration is over.
public struct ProcessUnorderedMapSequence<Output: Codable & Sendable>: AsyncSequence {
  /// An output and the position of its input (0 for the first input).
  public typealias Element = (index: Int, output: Output)
  let state: UnorderedMapState
  let counter: ProgressCounter

  init(state: UnorderedMapState, progress: ProgressCounter) {
    self.state = state
    self.counter = progress
  }

  /// Progress updates while the map runs, as ``ProcessMapSequence/progress``.
  public var progress: AsyncStream<ProcessPoolProgress> { counter.updates() }

  /// The progress now.
  public var currentProgress: ProcessPoolProgress { counter.snapshot }

  /// The iterator; make only one (the outputs are yielded once).
  public func makeAsyncIterator() -> Iterator { Iterator(state: state) }

  /// Yields the outputs as their chunks finish.
  public struct Iterator: AsyncIteratorProtocol {
    @usableFromInline let state: UnorderedMapState
    /// The outcomes of the chunk being yielded (decoded by code compiled for `Output`).
    @usableFromInline let ready = MapReadyBuffer<Output>()
    /// The input position of the open chunk's first item.
    @usableFromInline var start = 0
    /// The input position of the item last returned or thrown by `next()` (nil before the
    /// first): where a thrown per-item error came from.
    public var lastIndex: Int? { yielded }
    @usableFromInline var yielded: Int?

    init(state: UnorderedMapState) { self.state = state }

    /// The next finished output with its position, or nil after the last. Throws the item's
    /// own error at its turn (call again for the rest), or ``ProcessPoolError/Code/timedOut``.
    @inlinable
    public mutating func next() async throws -> Element? {
      try await next(isolation: nil)
    }

    /// What `for try await` calls: runs on the caller's executor.
    @inlinable
    public mutating func next(isolation actor: isolated (any Actor)?) async throws(any Error) -> Element? {
      if let outcome = ready.next() { return try yield(outcome, at: start + ready.index - 1) }
      guard let (start, chunk) = try await state.nextChunk(isolation: actor) else {
        ready.clear()
        return nil
      }
      self.start = start
      return try yield(ready.open(chunk), at: start)
    }

    @inlinable
    mutating func yield(_ outcome: Result<Output, any Error>, at index: Int) throws -> Element {
      yielded = index
      return (index, try outcome.get())
    }
  }
}
