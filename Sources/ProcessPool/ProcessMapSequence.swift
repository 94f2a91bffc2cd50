/// The ordered results of ``ProcessPoolExecutor/map(_:_:chunksize:buffersize:timeout:taskTimeout:progress:isolation:)``.
///
/// Iterate it once. A failing item throws at its position and `next()` may be called again for
/// the following items; after a timeout the iteration is over.
public struct ProcessMapSequence<Output: Codable & Sendable>: AsyncSequence {
  /// One output per input, in input order.
  public typealias Element = Output
  let state: MapState
  let counter: ProgressCounter

  init(state: MapState, progress: ProgressCounter) {
    self.state = state
    self.counter = progress
  }

  /// Progress updates while the map runs, readable from another task: the current value at once,
  /// then one per finished chunk (a slow reader sees the latest), ending when every item has
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
    @usableFromInline let state: MapState
    /// The outcomes of the chunk being yielded. The iterator's steps are inlinable, so they are
    /// compiled for the caller's output type: no runtime generic lookups per item, and a chunk
    /// is decoded by code specialised for `Output`.
    @usableFromInline let ready = MapReadyBuffer<Output>()

    init(state: MapState) { self.state = state }

    /// The next output in input order, or nil after the last. Throws the item's own error at
    /// its position (call again for the next item), or ``ProcessPoolError/Code/timedOut``.
    @inlinable
    public mutating func next() async throws -> Output? {
      if let outcome = ready.next() { return try outcome.get() }
      return try open(await state.nextChunk(isolation: nil))
    }

    /// What `for try await` calls: runs on the caller's executor, so a result that is already
    /// in costs no hop and one that is not resumes the caller directly.
    @inlinable
    public mutating func next(isolation actor: isolated (any Actor)?) async throws(any Error) -> Output? {
      if let outcome = ready.next() { return try outcome.get() }
      return try open(await state.nextChunk(isolation: actor))
    }

    /// Decodes the next chunk into `ready` and yields its first output (nil at the end).
    @inlinable
    func open(_ chunk: FinishedChunk?) throws -> Output? {
      guard let chunk else {
        ready.clear()
        return nil
      }
      return try ready.open(chunk).get()
    }
  }
}

/// The outcomes of the chunk being yielded and the next one to yield, shared by a map's state
/// (which fills it) and its iterator (which steps through it). One task iterates a map, so no
/// lock and no runtime exclusivity checks. A chunk is decoded straight into it and each outcome
/// is moved out as it is yielded: no array to copy from and none to destroy item by item, and
/// an output the caller has dropped is freed at once, not when the next chunk comes.
@usableFromInline
final class MapReadyBuffer<Output: Sendable> {
  /// Room for `capacity` outcomes (kept across chunks); those in `index..<count` are initialized.
  @usableFromInline @exclusivity(unchecked) var items: UnsafeMutablePointer<Result<Output, any Error>>
  @usableFromInline @exclusivity(unchecked) var capacity = 0
  @usableFromInline @exclusivity(unchecked) var count = 0
  @usableFromInline @exclusivity(unchecked) var index = 0

  @usableFromInline
  init() { items = .allocate(capacity: 0) }

  deinit {
    clear()
    items.deallocate()
  }

  /// The next outcome of the open chunk, or nil when it is used up.
  @inlinable
  func next() -> Result<Output, any Error>? {
    guard index < count else { return nil }
    defer { index += 1 }
    return (items + index).move()
  }

  /// Decodes a new chunk's outcomes (one at least) and hands out the first.
  @inlinable
  func open(_ chunk: FinishedChunk) -> Result<Output, any Error> where Output: Decodable {
    clear()
    if capacity < chunk.count {
      items.deallocate()
      items = .allocate(capacity: chunk.count)
      capacity = chunk.count
    }
    chunk.forEachOutcome(Output.self) { outcome in
      precondition(count < capacity, "more outcomes than a chunk's items")
      (items + count).initialize(to: outcome)
      count += 1
    }
    precondition(count == chunk.count && count > 0, "fewer outcomes than a chunk's items")
    index = 1
    return items.move()
  }

  @inlinable
  func clear() {
    if index < count { (items + index).deinitialize(count: count - index) }
    count = 0
    index = 0
  }
}

/// The chunks of a map in input order (as the batches they were pulled in), the chunks still to
/// pull (with a `buffersize`), and the deadline. Cancels what is left when the iteration ends
/// early (this object is released). Only the one iterating task touches it (iterate a map
/// once), so its properties skip the runtime's exclusivity checks, which cost more per item than
/// the work they guard.
@usableFromInline
final class MapState {
  private let source: ChunkSource
  private let buffersize: Int?
  private let deadline: ContinuousClock.Instant?
  /// Without a `buffersize`: the rest of the input, pulled by the pool (then `fill` has
  /// nothing to do).
  private var feed: MapFeed?
  /// Submitted batches, oldest first; those before `head` are fully yielded (released, and
  /// popped by moving `head`, so a map of many batches does not shift the array each time).
  @exclusivity(unchecked) private var batches: [MapBatch?] = []
  @exclusivity(unchecked) private var head = 0
  /// The head batch's chunk to yield next.
  @exclusivity(unchecked) private var chunk = 0
  /// Chunks submitted and not yet yielded (against `buffersize`).
  @exclusivity(unchecked) private var queued = 0
  /// Whether the head chunk was handed to the iterator (it still counts against `buffersize`
  /// while the iterator steps through it).
  @exclusivity(unchecked) private var headOpened = false
  @exclusivity(unchecked) private var finished = false

  init(source: ChunkSource, buffersize: Int?, timeout: Duration?) {
    self.source = source
    self.buffersize = buffersize
    self.deadline = timeout.map { ContinuousClock.Instant.deadline(after: $0) }
  }

  deinit {
    cancelRemaining()
    // Inputs never pulled will not finish: end the progress streams.
    source.progress.end()
  }

  /// Queues the first chunks: up to the buffer size, or the first window of a lazy feed, pulled
  /// on the pool's feeder thread or, when `actor` is given, on that actor.
  func start(pullingOn actor: (any Actor)?) throws {
    guard buffersize == nil else { return try fill() }
    let feed = MapFeed(source: source, pullingOn: actor)
    self.feed = feed
    append(try feed.start())
  }

  private func append(_ more: [MapBatch]) {
    for batch in more {
      batches.append(batch)
      queued += batch.count
    }
  }

  /// Submits chunks up to the buffer size, or all of them without one (unless the pool feeds
  /// the map).
  func fill() throws {
    guard feed == nil else { return }
    while let batch = try source.submitBatch(room: buffersize.map { $0 - queued }) {
      append([batch])
    }
  }

  /// Releases the chunk just yielded and waits for the next one (nil after the last). The
  /// iterator decodes it and steps through its outputs, and calls this once they are used up.
  @usableFromInline
  func nextChunk(isolation: isolated (any Actor)?) async throws -> FinishedChunk? {
    guard !finished else { return nil }
    if headOpened {
      headOpened = false
      queued -= 1
      chunk += 1
      if chunk == batches[head]!.count {
        batches[head] = nil
        head += 1
        chunk = 0
        if head == batches.count || head >= 1024 && head * 2 >= batches.count {
          batches.removeSubrange(0..<head)
          head = 0
        }
      }
      try fill()
    }
    if head == batches.count, let feed { try await takeBatches(from: feed, isolation: isolation) }
    guard head < batches.count, let batch = batches[head] else {
      finished = true
      return nil
    }
    let index = chunk
    let sent = try await outcome(of: batch, index, isolation: isolation)
    headOpened = true
    return FinishedChunk(sent: sent, count: batch.count(of: index), encodingFailures: batch.encodingFailures(of: index))
  }

  /// Waits for the feed's next batches (returns with none at its end, throwing why it ended
  /// early if it did).
  private func takeBatches(from feed: MapFeed, isolation: isolated (any Actor)?) async throws {
    while true {
      switch feed.take() {
      case .batches(let more):
        append(more)
        return
      case .end(let error):
        guard let error else { return }
        finished = true
        cancelRemaining()
        throw error
      case .nothingYet:
        try checkDeadlineAndCancellation()
        await feed.signal.wait(until: deadline, isolation: isolation)
      }
    }
  }

  /// The outcome of chunk `index` of `batch` once it is done (a failure fails each of its items
  /// at its own position), or the map's timeout or cancellation.
  private func outcome(
    of batch: MapBatch, _ index: Int, isolation: isolated (any Actor)?
  ) async throws -> Result<RawOutcomes, any Error> {
    while true {
      if let outcome = batch.takeOutcome(index) { return outcome }
      try checkDeadlineAndCancellation()
      source.arrivals.want(batch, index)
      if batch.isDone(index) { continue }
      await source.arrivals.wait(until: deadline, isolation: isolation)
    }
  }

  /// Ends the map (cancelling what is left) when its task was cancelled or its deadline passed.
  private func checkDeadlineAndCancellation() throws {
    if Task.isCancelled {
      finished = true
      cancelRemaining()
      throw CancellationError()
    }
    if let deadline, deadline <= .now {
      finished = true
      cancelRemaining()
      throw ProcessPoolError(.timedOut, "map did not finish within its timeout")
    }
  }

  private func cancelRemaining() {
    // The feed first: cancelled chunks leave the queue, which must not make the pool pull more.
    feed?.abandon()
    for position in head..<batches.count {
      batches[position]?.cancel(
        from: position == head ? chunk : 0, terminatingWorker: source.terminatesRunningWork)
    }
    batches = []
    head = 0
    chunk = 0
    queued = 0
    headOpened = false
  }
}
