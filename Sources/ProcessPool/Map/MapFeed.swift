import Synchronization

/// The input of a `map` without `buffersize`, pulled lazily: `map()` queues a first window and
/// returns, and the pool's feeder thread pulls the rest a batch at a time whenever the queue runs
/// low, so a map of millions of items neither holds its caller nor its memory. What was passed
/// still runs if the map is never iterated (the pool does not stop while the feed has inputs);
/// the map's state takes the batches of chunks made here in input order.
///
/// An input whose iterator may run the caller's code (anything but an array or an integer range)
/// of a map made on an actor is pulled on that actor instead: the feeder thread asks for a batch
/// and a task on the actor pulls it and hands it over.
///
/// `@unchecked Sendable`: `source` (and the user's iterator in it) is touched by one thread at a
/// time, the map's caller for the first window, then the feeder thread or the map's actor (handed
/// over under the pool's lock); everything else is under `shared`.
final class MapFeed: JobSource, @unchecked Sendable {
  private let source: ChunkSource
  /// Fired when chunks are made or the feed ends; the map's iterator waits on it.
  let signal: ChunkArrivals
  /// The actor the input is pulled on (nil: the feeder thread pulls it), and its requests.
  private let actor: (any Actor)?
  private let requests: AsyncStream<Void>.Continuation?
  private let requested: AsyncStream<Void>?

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
  /// Held while a batch is pulled: one puller at a time.
  private let pulling = Mutex(())

  /// About how many inputs `map` pulls before it returns (at least one chunk).
  static let firstWindowInputs = 1024

  init(source: ChunkSource, pullingOn actor: (any Actor)?) {
    self.source = source
    self.signal = source.arrivals
    self.actor = actor
    if actor != nil {
      // One request outstanding at most (the pool asks again only once a batch is handed over).
      let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
      (requested, requests) = (stream, continuation)
    } else {
      (requested, requests) = (nil, nil)
    }
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
        markDone()
        return batches
      }
      let rejection = source.core.transition { state, effects in state.addSource(self, now: .now, &effects) }
      if let rejection { throw rejection }
    } catch {
      markDone()
      for batch in batches { batch.cancel(from: 0, terminatingWorker: false) }
      throw error
    }
    if let actor, let requested {
      // Holds the actor until the feed is done (it runs to its end, as the pool's thread would).
      Task { await Self.pump(self, requested, on: actor) }
    }
    return batches
  }

  /// On the map's actor: pulls a batch each time the pool asks, until the feed is done.
  private static func pump(_ feed: MapFeed, _ requested: AsyncStream<Void>, on actor: isolated any Actor) async {
    for await _ in requested { feed.pull(into: feed.source.core) }
  }

  /// On the feeder thread: pulls one batch and queues it, or asks the map's actor to.
  func feed(into core: PoolCore) {
    guard let requests else { return pull(into: core) }
    requests.yield()
  }

  /// Whether the input is pulled on `actor`.
  func pulls(on actor: any Actor) -> Bool { self.actor === actor }

  /// On `actor`'s thread, blocked until the pool stops: pulls the rest of the input here, as the
  /// task that would pull it cannot run meanwhile. (Should the exit hook run on another thread
  /// while the actor still runs, `pulling` keeps the two from pulling at once.)
  func drain(into core: PoolCore) {
    while !shared.withLock({ $0.done }) { pull(into: core) }
  }

  /// Ends the actor's task once nothing more is pulled.
  private func markDone() {
    shared.withLock { $0.done = true }
    requests?.finish()
  }

  /// Pulls one batch and queues it.
  private func pull(into core: PoolCore) {
    pulling.withLock { _ in pullBatch(into: core) }
  }

  private func pullBatch(into core: PoolCore) {
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
    let (abandoned, done) = shared.withLock { shared -> (Bool, Bool) in
      shared.feeding = false
      if shared.abandoned { return (true, true) }
      if let batch { shared.produced.append(batch) }
      if !exhausted, shared.ending == nil { shared.ending = rejection }
      if exhausted || shared.ending != nil { shared.done = true }
      return (false, shared.done)
    }
    if done { requests?.finish() }
    if abandoned { batch?.cancel(from: 0, terminatingWorker: source.terminatesRunningWork) }
    signal.fire()
  }

  /// The pool dropped the source (it broke, or its queued work was cancelled).
  func stop(_ error: ProcessPoolError) {
    let done = shared.withLock { shared -> Bool in
      guard !shared.done else { return true }
      if shared.ending == nil { shared.ending = error }
      // A batch being pulled hands over first, then ends the feed.
      if !shared.feeding { shared.done = true }
      return shared.done
    }
    if done { requests?.finish() }
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
    requests?.finish()
    // A forked child's copy of the pool is its parent's: leave it alone.
    if registered && source.core.belongsToThisProcess {
      source.core.transition { state, effects in state.removeSource(self, now: .now, &effects) }
    }
    for batch in produced { batch.cancel(from: 0, terminatingWorker: source.terminatesRunningWork) }
  }
}
