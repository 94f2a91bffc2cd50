import Synchronization

/// The input of a `map` without `buffersize`, pulled lazily: `map()` queues a first window and
/// returns, and the pool's feeder thread pulls the rest a batch at a time whenever the queue runs
/// low, so a map of millions of items neither holds its caller nor its memory. What was passed
/// still runs if the map is never iterated (the pool does not stop while the feed has inputs);
/// the map's state takes the batches of chunks made here in input order.
///
/// `@unchecked Sendable`: `source` (and the user's iterator in it) is touched by one thread at a
/// time, the map's caller for the first window, then the feeder thread (handed over under the
/// pool's lock); everything else is under `shared`.
final class MapFeed: JobSource, @unchecked Sendable {
  private let source: ChunkSource
  /// Fired when chunks are made or the feed ends; the map's iterator waits on it.
  let signal: ChunkArrivals

  private struct Shared {
    /// Batches made (and queued) that the map's state has not taken yet, in input order.
    var produced: [MapBatch] = []
    /// Nothing more will be produced.
    var done = false
    /// Why the feed stopped before the input's end (thrown once, after the last chunk).
    var ending: ProcessPoolError?
    /// The map's iteration ended early: what is made from now on is cancelled at once.
    var abandoned = false
    /// The feeder is pulling a batch that it has not handed over yet.
    var feeding = false
  }
  private let shared = Mutex(Shared())

  /// About how many inputs `map` pulls before it returns (at least one chunk).
  static let firstWindowInputs = 1024

  init(source: ChunkSource) {
    self.source = source
    self.signal = source.arrivals
  }

  /// Queues the first window on the caller's thread (throwing there, as `submit` does, when the
  /// pool takes no work) and, if the input goes on, hands the rest to the pool. Returns the
  /// first window's batches.
  func start() throws -> [MapBatch] {
    // Few inputs when the chunks are big (the automatic chunksize makes a handful of huge ones):
    // the pool's feeder pulls the rest at once.
    let window = min(source.core.read { $0.feedHighWater }, max(1, Self.firstWindowInputs / source.chunksize))
    var batches: [MapBatch] = []
    var chunks = 0
    do {
      while chunks < window, !source.exhausted {
        guard let batch = try source.submitNext(upTo: min(source.batchChunks, window - chunks)) else { break }
        batches.append(batch)
        chunks += batch.count
      }
      if source.exhausted {
        shared.withLock { $0.done = true }
        return batches
      }
      let rejection = source.core.transition { state, effects in state.addSource(self, now: .now, &effects) }
      if let rejection { throw rejection }
    } catch {
      for batch in batches { batch.cancel(from: 0, terminatingWorker: false) }
      throw error
    }
    return batches
  }

  /// On the feeder thread: pulls one batch and queues it.
  func feed(into core: PoolCore) {
    let go = shared.withLock { shared -> Bool in
      guard !shared.done, !shared.abandoned else { return false }
      shared.feeding = true
      return true
    }
    guard go else { return }
    let batch = source.makeBatch(upTo: source.batchChunks)
    let exhausted = source.exhausted
    let rejection = core.transition { state, effects in
      state.sourceFed(self, batch, exhausted: exhausted, now: .now, &effects)
    }
    // Not queued: each of the batch's items fails at its position with the reason (the one the
    // pool gave when it dropped the source, if it did already).
    if let rejection {
      let reason = shared.withLock { $0.ending } ?? rejection
      batch?.fail(from: 0, reason)
    }
    let abandoned = shared.withLock { shared -> Bool in
      shared.feeding = false
      if shared.abandoned { return true }
      if let batch { shared.produced.append(batch) }
      if !exhausted, shared.ending == nil { shared.ending = rejection }
      if exhausted || shared.ending != nil { shared.done = true }
      return false
    }
    if abandoned { batch?.cancel(from: 0, terminatingWorker: source.terminatesRunningWork) }
    signal.fire()
  }

  /// The pool dropped the source (it broke, or its queued work was cancelled).
  func stop(_ error: ProcessPoolError) {
    shared.withLock { shared in
      guard !shared.done else { return }
      if shared.ending == nil { shared.ending = error }
      // A batch being pulled hands over first, then ends the feed.
      if !shared.feeding { shared.done = true }
    }
    signal.fire()
  }

  /// What the map's state finds: batches, the end (with why, if early), or nothing yet.
  enum Take {
    case batches([MapBatch])
    case end(ProcessPoolError?)
    case nothingYet
  }

  /// Takes the batches made so far; the end only once every one was taken (its error once).
  func take() -> Take {
    shared.withLock { shared in
      if !shared.produced.isEmpty {
        defer { shared.produced = [] }
        return .batches(shared.produced)
      }
      guard shared.done else { return .nothingYet }
      defer { shared.ending = nil }
      return .end(shared.ending)
    }
  }

  /// The map's iteration ended early: cancels what was made and not taken, and stops pulling.
  func abandon() {
    let (produced, registered) = shared.withLock { shared -> ([MapBatch], Bool) in
      // Done means the pool no longer holds the source (or never did).
      let registered = !shared.done
      shared.abandoned = true
      shared.done = true
      defer { shared.produced = [] }
      return (shared.produced, registered)
    }
    // A forked child's copy of the pool is its parent's: leave it alone.
    if registered && source.core.belongsToThisProcess {
      source.core.transition { state, effects in state.removeSource(self, now: .now, &effects) }
    }
    for batch in produced { batch.cancel(from: 0, terminatingWorker: source.terminatesRunningWork) }
  }
}
