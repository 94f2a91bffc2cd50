import Synchronization

/// The input of a `map` without `buffersize`, pulled lazily: `map()` queues a first window and
/// returns, and the pool's feeder thread pulls the rest a batch at a time whenever the queue runs
/// low, so a map of millions of items neither holds its caller nor its memory. What was passed
/// still runs if the map is never iterated (the pool does not stop while the feed has inputs);
/// the map's state takes the chunks made here in input order.
///
/// `@unchecked Sendable`: `source` (and the user's iterator in it) is touched by one thread at a
/// time, the map's caller for the first window, then the feeder thread (handed over under the
/// pool's lock); everything else is under `shared`.
final class MapFeed: JobSource, @unchecked Sendable {
  private let source: ChunkSource
  /// Fired when chunks are made or the feed ends; the map's iterator waits on it.
  let signal: CompletionSignal

  private struct Shared {
    /// Chunks made (and queued) that the map's state has not taken yet, in input order.
    var produced: [MapChunk] = []
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

  init(source: ChunkSource, signal: CompletionSignal) {
    self.source = source
    self.signal = signal
  }

  /// Queues the first window on the caller's thread (throwing there, as `submit` does, when the
  /// pool takes no work) and, if the input goes on, hands the rest to the pool. Returns the
  /// first window's chunks.
  func start() throws -> [MapChunk] {
    // Few inputs when the chunks are big (the automatic chunksize makes a handful of huge ones):
    // the pool's feeder pulls the rest at once.
    let window = min(source.core.read { $0.feedHighWater }, max(1, Self.firstWindowInputs / source.chunksize))
    var chunks: [MapChunk] = []
    do {
      while chunks.count < window, !source.exhausted {
        chunks += try source.submitNext(upTo: min(source.batchChunks, window - chunks.count))
      }
      if source.exhausted {
        shared.withLock { $0.done = true }
        return chunks
      }
      let rejection = source.core.transition { state, effects in state.addSource(self, now: .now, &effects) }
      if let rejection { throw rejection }
    } catch {
      for chunk in chunks { _ = chunk.future?.cancel() }
      throw error
    }
    return chunks
  }

  /// On the feeder thread: pulls one batch and queues it.
  func feed(into core: PoolCore) {
    let go = shared.withLock { shared -> Bool in
      guard !shared.done, !shared.abandoned else { return false }
      shared.feeding = true
      return true
    }
    guard go else { return }
    let (chunks, jobs) = source.makeChunks(upTo: source.batchChunks)
    let exhausted = source.exhausted
    let rejection = core.transition { state, effects in
      state.sourceFed(self, jobs, exhausted: exhausted, now: .now, &effects)
    }
    // Not queued: each of the batch's items fails at its position with the reason (the one the
    // pool gave when it dropped the source, if it did already).
    if let rejection {
      let reason = shared.withLock { $0.ending } ?? rejection
      for job in jobs { job.sink.fail(reason) }
    }
    let abandoned = shared.withLock { shared -> Bool in
      shared.feeding = false
      if shared.abandoned { return true }
      shared.produced.append(contentsOf: chunks)
      if !exhausted, shared.ending == nil { shared.ending = rejection }
      if exhausted || shared.ending != nil { shared.done = true }
      return false
    }
    if abandoned {
      for chunk in chunks { _ = chunk.future?.cancel(terminatingWorker: source.terminatesRunningWork) }
    }
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

  /// What the map's state finds: chunks, the end (with why, if early), or nothing yet.
  enum Take {
    case chunks([MapChunk])
    case end(ProcessPoolError?)
    case nothingYet
  }

  /// Takes the chunks made so far; the end only once every chunk was taken (its error once).
  func take() -> Take {
    shared.withLock { shared in
      if !shared.produced.isEmpty {
        defer { shared.produced = [] }
        return .chunks(shared.produced)
      }
      guard shared.done else { return .nothingYet }
      defer { shared.ending = nil }
      return .end(shared.ending)
    }
  }

  /// The map's iteration ended early: cancels what was made and not taken, and stops pulling.
  func abandon() {
    let (produced, registered) = shared.withLock { shared -> ([MapChunk], Bool) in
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
    for chunk in produced { _ = chunk.future?.cancel(terminatingWorker: source.terminatesRunningWork) }
  }
}
