/// A lazy input the pool pulls jobs from when its queue runs low (a `map` without
/// `buffersize`): only a bounded window of such an input is encoded and queued at a time, and the
/// pool does not stop (a graceful shutdown included) while a source still has inputs.
protocol JobSource: AnyObject, Sendable {
  /// Pulls the next batch and hands it to the pool with `PoolState.sourceFed`. Called on the
  /// pool's feeder thread, never twice at once.
  func feed(into core: PoolCore)
  /// The pool will not run what is left of the source (it broke, or the queued work was
  /// cancelled); `error` says why. Called with the pool's lock released.
  func stop(_ error: ProcessPoolError)
}

/// Registering, feeding and dropping sources. One feeder thread at a time pulls from them, started
/// by `advance` when the queue falls below `feedLowWater` and running until it reaches
/// `feedHighWater` (or no source is left).
extension PoolState {
  /// Below this many queued jobs, the sources are pulled from.
  var feedLowWater: Int { max(128, 4 * configuration.capacity) }
  /// The feeder pulls until the queue holds this many jobs.
  var feedHighWater: Int { 2 * feedLowWater }

  /// Whether the feeder may pull: the pool runs, or is shutting down gracefully (what was passed
  /// to a map still runs).
  private var feeds: Bool {
    switch lifecycle {
    case .running, .shuttingDown: return !forced
    case .broken, .stopped: return false
    }
  }

  /// Adds a source whose first window is already queued; nil when accepted, else the error the
  /// map's caller gets.
  mutating func addSource(_ source: any JobSource, now: MonotonicInstant, _ effects: inout PoolEffects)
    -> ProcessPoolError?
  {
    self.now = now
    if let rejection { return rejection }
    sources.append(source)
    advance(&effects)
    return nil
  }

  /// The source's map was abandoned (its iteration ended early): nothing more is pulled from it.
  mutating func removeSource(_ source: any JobSource, now: MonotonicInstant, _ effects: inout PoolEffects) {
    self.now = now
    sources.removeAll { $0 === source }
    advance(&effects)
  }

  /// Queues a batch pulled from `source` (the last one when `exhausted`); nil when accepted,
  /// else why not (the source was dropped meanwhile): the batch is then the source's to fail.
  mutating func sourceFed(
    _ source: any JobSource, _ jobs: [Job], exhausted: Bool, now: MonotonicInstant, _ effects: inout PoolEffects
  ) -> ProcessPoolError? {
    self.now = now
    guard feeds, let index = sources.firstIndex(where: { $0 === source }) else {
      return rejection ?? ProcessPoolError(.cancelled, "the map's remaining inputs were cancelled")
    }
    if exhausted { sources.remove(at: index) }
    for job in jobs { queue.append(job) }
    statistics.tasksSubmitted += jobs.count
    advance(&effects)
    return nil
  }

  /// For the feeder thread: the source to pull from next (the oldest: maps run in the order they
  /// were made, as if each had been queued whole), or nil when the queue is full enough or no
  /// source is left, in which case the feeder ends (`advance` starts another when needed).
  mutating func nextSourceToFeed() -> (any JobSource)? {
    guard feeds, let source = sources.first, queue.count < feedHighWater else {
      feederRunning = false
      return nil
    }
    return source
  }

  /// Starts the feeder when the queue runs low and a source has inputs; part of `advance`.
  mutating func requestFeed(_ effects: inout PoolEffects) {
    guard !sources.isEmpty, !feederRunning, feeds, queue.count < feedLowWater else { return }
    feederRunning = true
    effects.startFeeder = true
  }

  /// Drops every source: none will be pulled from again, and each is told why.
  mutating func dropSources(_ error: ProcessPoolError, _ effects: inout PoolEffects) {
    for source in sources { effects.stoppedSources.append((source, error)) }
    sources = []
  }
}
