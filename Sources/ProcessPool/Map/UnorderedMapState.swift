import Synchronization

/// The chunks of an unordered map that are submitted and not yet yielded, each with the
/// position of its first input, and the order they finish in. Like `MapState`, only the one
/// iterating task touches it; the futures' completion reaches it through `ChunkArrivals`.
@usableFromInline
final class UnorderedMapState {
  private let source: ChunkSource
  private let buffersize: Int?
  private let deadline: ContinuousClock.Instant?
  private let arrivals = ChunkArrivals()
  /// Without a `buffersize`: the rest of the input, pulled by the pool (nil once it ended).
  private var feed: MapFeed?
  private var fedByPool = false
  /// Why the feed ended early, thrown once every chunk it made was yielded.
  @exclusivity(unchecked) private var feedEnding: ProcessPoolError?
  /// Submitted chunks not yet handed to the iterator, by key, with their first position and
  /// the id they are watched with.
  @exclusivity(unchecked) private var pending: [Int: (chunk: MapChunk, start: Int, watch: Int)] = [:]
  @exclusivity(unchecked) private var nextKey = 0
  @exclusivity(unchecked) private var nextStart = 0
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
    let feed = MapFeed(source: source, signal: arrivals.signal, pullingOn: actor)
    self.feed = feed
    watch(try feed.start())
  }

  /// Submits chunks up to the buffer size, or all of them without one (unless the pool feeds
  /// the map).
  func fill() throws {
    guard !fedByPool else { return }
    while true {
      let submitted = try source.submitBatch(room: buffersize.map { $0 - pending.count - (opened ? 1 : 0) })
      if submitted.isEmpty { return }
      watch(submitted)
    }
  }

  /// Keeps submitted chunks, in input order, and watches each.
  private func watch(_ submitted: [MapChunk]) {
    for chunk in submitted {
      let key = nextKey
      nextKey += 1
      let watch = arrivals.signal.nextID()
      pending[key] = (chunk, nextStart, watch)
      nextStart += chunk.count
      let arrivals = self.arrivals
      // No future: every input failed to encode, so the chunk is ready now.
      if chunk.future?.watchCompletion(watch, { arrivals.arrived(key) }) != true { arrivals.arrived(key) }
    }
  }

  /// Takes what the feed made since the last look; forgets the feed at its end.
  private func takeFromFeed() {
    guard let feed else { return }
    switch feed.take() {
    case .chunks(let chunks): watch(chunks)
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
      if let key = arrivals.take(), let (chunk, start, _) = pending.removeValue(forKey: key) {
        opened = true
        var sent: Result<RawOutcomes, any Error> = .success(RawOutcomes())
        if let future = chunk.future {
          // Finished or cancelled: it has an outcome. A failure fails each item in its turn.
          sent = future.outcome ?? .failure(ProcessPoolError(.cancelled, "the future was cancelled"))
        }
        return (start, FinishedChunk(sent: sent, count: chunk.count, encodingFailures: chunk.encodingFailures))
      }
      if pending.isEmpty && feed == nil {
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
      await arrivals.signal.wait(until: deadline)
    }
  }

  private func cancelRemaining() {
    // The feed first: cancelled chunks leave the queue, which must not make the pool pull more.
    feed?.abandon()
    feed = nil
    for (chunk, _, watch) in pending.values {
      chunk.future?.stopWatching(watch)
      chunk.future?.cancel(terminatingWorker: source.terminatesRunningWork)
    }
    pending = [:]
    opened = false
  }
}

/// The keys of the chunks that finished, in the order they did, and the signal that wakes the
/// iterator; told by the thread that finishes each chunk's future.
final class ChunkArrivals: Sendable {
  private let keys = Mutex<[Int]>([])
  let signal = CompletionSignal()

  func arrived(_ key: Int) {
    keys.withLock { $0.append(key) }
    signal.fire()
  }

  func take() -> Int? {
    keys.withLock { $0.isEmpty ? nil : $0.removeFirst() }
  }
}
