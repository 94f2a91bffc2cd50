/// A lazy input the pool pulls jobs from when its queue runs low (a `map` without
/// `buffersize`): only a bounded window of such an input is encoded and queued at a time, and the
/// pool does not stop (a graceful shutdown included) while a source still has inputs.
protocol JobSource: AnyObject, Sendable {
  /// Pulls the next batch and hands it to the pool with `PoolState.sourceFed`, before it returns
  /// or later (a source whose input must be pulled on its map's actor hands it over from there).
  /// Called on the pool's feeder thread, and not again before the batch was handed over.
  func feed(into core: PoolCore)
  /// The pool will not run what is left of the source (it broke, or the queued work was
  /// cancelled); `error` says why. Called with the pool's lock released.
  func stop(_ error: ProcessPoolError)
}

/// Registering, feeding and dropping sources. One feeder thread pulls from them: started by
/// `advance` when the queue falls below `feedLowWater`, it pulls until the queue reaches
/// `feedHighWater`, then sleeps until the queue is low again, and ends when no source is left.
extension PoolState {
  /// Below this many queued jobs, the sources are pulled from.
  var feedLowWater: Int { max(256, 4 * configuration.capacity) }
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
    if sources.first === source { feederAwaitsSource = false }
    sources.removeAll { $0 === source }
    advance(&effects)
  }

  /// Queues a batch pulled from `source` (none when the input ended exactly; the last one when
  /// `exhausted`); nil when accepted, else why not (the source was dropped meanwhile): the batch
  /// is then the source's to fail.
  mutating func sourceFed(
    _ source: any JobSource, _ batch: (any JobBatch)?, exhausted: Bool, now: MonotonicInstant,
    _ effects: inout PoolEffects
  ) -> ProcessPoolError? {
    self.now = now
    guard feeds, let index = sources.firstIndex(where: { $0 === source }) else {
      // Dropped meanwhile (`dropSources`), or its map was abandoned.
      if let brokenReason { return brokenReason }
      if forced { return ProcessPoolError(.brokenPool, "the pool was forcefully shut down") }
      return ProcessPoolError(.cancelled, "the map's remaining inputs were cancelled")
    }
    if index == 0 && feederAwaitsSource {
      // A batch handed over late: the feeder, asleep meanwhile, decides whether to pull more.
      feederAwaitsSource = false
      if feederSleeping {
        feederSleeping = false
        effects.wakeFeeder = true
      }
    }
    if exhausted { sources.remove(at: index) }
    if let batch {
      queue.append(batch)
      statistics.tasksSubmitted += batch.jobCount
    }
    advance(&effects)
    return nil
  }

  /// What the feeder thread does next.
  enum FeederStep {
    /// Pull a batch from this source: the oldest (maps run in the order they were made, as if
    /// each had been queued whole).
    case feed(any JobSource)
    /// The queue is full enough: sleep until woken (`PoolEffects.wakeFeeder`).
    case sleep
    /// No source is left (or the pool takes no more): the thread ends.
    case exit
  }

  /// For the feeder thread: its next step.
  mutating func nextFeederStep() -> FeederStep {
    guard feeds, let source = sources.first else {
      feederRunning = false
      feederSleeping = false
      return .exit
    }
    guard queue.count < feedHighWater, !feederAwaitsSource else {
      feederSleeping = true
      return .sleep
    }
    feederAwaitsSource = true
    return .feed(source)
  }

  /// For a feeder that has no thread of its own (it ran on the thread of the transition that
  /// started it) and was told to sleep: it gives the role back, unless it was woken meanwhile
  /// (the queue ran low again), in which case it goes on (returns true).
  mutating func feederStepsDown() -> Bool {
    guard feederSleeping else { return true }
    feederSleeping = false
    feederRunning = false
    return false
  }

  /// Starts or wakes the feeder when the queue runs low and a source has inputs, and wakes it to
  /// end when none is left; part of `advance`.
  mutating func requestFeed(_ effects: inout PoolEffects) {
    let wanted = !sources.isEmpty && feeds && queue.count < feedLowWater
    if feederSleeping && (wanted || sources.isEmpty || !feeds) {
      feederSleeping = false
      effects.wakeFeeder = true
    } else if wanted && !feederRunning {
      feederRunning = true
      effects.startFeeder = true
    }
  }

  /// Drops every source: none will be pulled from again, and each is told why.
  mutating func dropSources(_ error: ProcessPoolError, _ effects: inout PoolEffects) {
    for source in sources { effects.stoppedSources.append((source, error)) }
    sources = []
    feederAwaitsSource = false
  }
}
