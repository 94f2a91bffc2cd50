/// The chunks of an unordered map that are submitted and not yet yielded (as the batches they
/// were pulled in), and the order they finish in. Like `MapState`, only the one iterating task
/// touches it; the chunks' completion reaches it through the map's `ChunkArrivals`.
@usableFromInline
final class UnorderedMapState {
  private let source: ChunkSource
  private let buffersize: Int?
  private let deadline: ContinuousClock.Instant?
  private var arrivals: ChunkArrivals { source.arrivals }
  /// Without a `buffersize`: the rest of the input, pulled by the pool (nil once it ended).
  private var feed: MapFeed?
  private var fedByPool = false
  /// Why the feed ended early, thrown once every chunk it made was yielded.
  @exclusivity(unchecked) private var feedEnding: ProcessPoolError?
  /// Batches with chunks not yet yielded, by identity (a chunk may finish, and be yielded,
  /// before its batch is taken from the feed).
  @exclusivity(unchecked) private var live: [ObjectIdentifier: MapBatch] = [:]
  /// Chunks submitted (taken from the feed) and not yet yielded; below zero while chunks of a
  /// batch not yet taken from the feed were yielded.
  @exclusivity(unchecked) private var outstanding = 0
  /// Whether a chunk was handed to the iterator (it counts against `buffersize` until the
  /// iterator comes back for the next one).
  @exclusivity(unchecked) private var opened = false
  @exclusivity(unchecked) private var finished = false

  init(source: ChunkSource, buffersize: Int?, timeout: Duration?) {
    self.source = source
    self.buffersize = buffersize
    self.deadline = timeout.map { ContinuousClock.Instant.deadline(after: $0) }
  }

  deinit {
    cancelRemaining()
    source.progress.end()
  }

  /// Queues the first chunks: up to the buffer size, or the first window of a lazy feed, pulled
  /// on the pool's feeder thread or, when `actor` is given, on that actor.
  func start(pullingOn actor: (any Actor)?) throws {
    guard buffersize == nil else { return try fill() }
    fedByPool = true
    let feed = MapFeed(source: source, pullingOn: actor)
    self.feed = feed
    keep(try feed.start())
  }

  /// Submits chunks up to the buffer size, or all of them without one (unless the pool feeds
  /// the map).
  func fill() throws {
    guard !fedByPool else { return }
    while let batch = try source.submitBatch(room: buffersize.map { $0 - outstanding - (opened ? 1 : 0) }) {
      keep([batch])
    }
  }

  /// Keeps submitted batches until each of their chunks is yielded.
  private func keep(_ batches: [MapBatch]) {
    for batch in batches {
      outstanding += batch.count
      if batch.unyielded > 0 { live[ObjectIdentifier(batch)] = batch }
    }
  }

  /// Takes what the feed made since the last look; forgets the feed at its end.
  private func takeFromFeed() {
    guard let feed else { return }
    switch feed.take() {
    case .batches(let batches): keep(batches)
    case .end(let error):
      feedEnding = error
      self.feed = nil
    case .nothingYet: break
    }
  }

  /// The next finished chunk and the position of its first input (nil after the last).
  @usableFromInline
  func nextChunk(isolation: isolated (any Actor)?) async throws -> (Int, FinishedChunk)? {
    guard !finished else { return nil }
    if opened {
      opened = false
      try fill()
    }
    while true {
      takeFromFeed()
      if let (batch, index) = arrivals.take().map({ ($0.0, $0.1) }) {
        opened = true
        outstanding -= 1
        batch.unyielded -= 1
        if batch.unyielded == 0 { live[ObjectIdentifier(batch)] = nil }
        // Finished or cancelled: it has an outcome. A failure fails each item in its turn.
        let sent = batch.takeOutcome(index) ?? .failure(ProcessPoolError(.cancelled, "the future was cancelled"))
        return (
          batch.position(of: index),
          FinishedChunk(sent: sent, count: batch.count(of: index), encodingFailures: batch.encodingFailures(of: index))
        )
      }
      if outstanding == 0 && feed == nil {
        finished = true
        if let error = feedEnding {
          feedEnding = nil
          throw error
        }
        return nil
      }
      if let deadline, deadline <= .now {
        finished = true
        cancelRemaining()
        throw ProcessPoolError(.timedOut, "map did not finish within its timeout")
      }
      if Task.isCancelled {
        finished = true
        cancelRemaining()
        throw CancellationError()
      }
      await arrivals.wait(until: deadline, isolation: isolation)
    }
  }

  private func cancelRemaining() {
    // The feed first: cancelled chunks leave the queue, which must not make the pool pull more.
    feed?.abandon()
    feed = nil
    // What finishes from now on is not collected: the batches are let go of.
    arrivals.stopCollecting()
    for batch in live.values { batch.cancel(from: 0, terminatingWorker: source.terminatesRunningWork) }
    live = [:]
    outstanding = 0
    opened = false
  }
}
