#if canImport(Glibc)
  import Glibc
#endif

/// Handing queued work to workers, retiring workers, and finishing a shutdown.
extension PoolState {
  /// Puts jobs in the queue, all or none, with one dispatch pass; nil when accepted, else the
  /// error to throw at the caller.
  mutating func submit(_ jobs: some Collection<Job>, now: MonotonicInstant, _ effects: inout PoolEffects)
    -> ProcessPoolError?
  {
    self.now = now
    if let rejection { return rejection }
    for job in jobs { queue.append(job) }
    statistics.tasksSubmitted += jobs.count
    advance(&effects)
    return nil
  }

  /// Runs after every event: dispatch, retire, and move the lifecycle on.
  mutating func advance(_ effects: inout PoolEffects) {
    dispatch(&effects)
    stopIdleWorkers(&effects)
    switch lifecycle {
    case .shuttingDown, .broken:
      guard workers.isEmpty, spawning == 0, queue.isEmpty else { return }
      lifecycle = .stopped
      effects.stopped = true
      effects.wakeIO = true
    case .running, .stopped:
      break
    }
  }

  /// Workers on their way that will take queued jobs: being spawned, or launched and waiting
  /// for their hello.
  private var workersComing: Int {
    var coming = spawning
    // Indexing, not a closure over copies: this runs on every dispatch pass.
    for index in workers.indices where workers[index].launched {
      if case .starting = workers[index].phase { coming += 1 }
    }
    return coming
  }

  private var canSpawn: Bool {
    switch lifecycle {
    case .running, .shuttingDown: return !forced && spawnRetryAt == nil
    default: return false
    }
  }

  private mutating func dispatch(_ effects: inout PoolEffects) {
    let maxTasks = configuration.maxTasksPerChild
    // 1. Idle workers first (CPython reuses an idle worker before starting one).
    for index in workers.indices where !queue.isEmpty {
      if workers[index].isIdle && workers[index].accepts(maxTasksPerChild: maxTasks) {
        assignNext(to: index, &effects)
      }
    }
    guard !queue.isEmpty else { return }
    // 2. Start workers for what is left, from the first launchers with room.
    if canSpawn {
      var wanted = queue.count - workersComing
      for launcher in launchers.indices where wanted > 0 && !launcherGivenUp[launcher] {
        // Every process counts, a retiring one too: never more alive than the launcher allows.
        var alive = 0
        for index in workers.indices where workers[index].launcher == launcher { alive += 1 }
        let count = min(wanted, launchers[launcher].workers - alive - launcherSpawning[launcher])
        guard count > 0 else { continue }
        spawning += count
        launcherSpawning[launcher] += count
        effects.spawns += repeatElement(launcher, count: count)
        wanted -= count
      }
    }
    // 3. Pipeline the rest onto busy workers, so a stream of small tasks never waits for a
    //    round trip; jobs that new workers will take stay queued.
    let coming = workersComing
    while queue.count > coming {
      var best: Int?
      for index in workers.indices where workers[index].accepts(maxTasksPerChild: maxTasks) {
        if workers[index].inflight.count < workers[index].pipelineDepth(configuration),
          best == nil || workers[index].inflight.count < workers[best!].inflight.count
        {
          best = index
        }
      }
      guard let best, assignNext(to: best, &effects) else { break }
    }
  }

  /// Sends the next job that was not cancelled to `workers[index]`; false when the queue ran dry.
  @discardableResult
  private mutating func assignNext(to index: Int, _ effects: inout PoolEffects) -> Bool {
    while let job = queue.popFirst() {
      guard job.sink.start() else {
        effects.acknowledgedCancels.append(job.sink)
        continue
      }
      if let refusal = workers[index].refusal(of: job) {
        effects.failures.append((job.sink, refusal))
        continue
      }
      job.id = nextJobID
      nextJobID += 1
      workers[index].jobsAssigned += 1
      workers[index].inflight.append(job)
      if workers[index].inflight.count == 1 && configuration.adaptivePipelining {
        workers[index].headStartedAt = now
      }
      if workers[index].inflight.count == 1 && workers[index].phase == .ready {
        workers[index].headDeadline = job.timeout.map { now.advanced(by: $0) }
        if job.timeout != nil { effects.wakeIO = true }
      }
      if workers[index].enqueue(job) {
        effects.flushes.append(workers[index].id)
      }
      return true
    }
    return false
  }

  /// Workers with nothing to do that must go: at their task limit, or the pool is shutting down
  /// and no work is left.
  private mutating func stopIdleWorkers(_ effects: inout PoolEffects) {
    let shuttingDown = lifecycle == .shuttingDown && queue.isEmpty
    for index in workers.indices where workers[index].isIdle {
      switch workers[index].phase {
      case .starting, .ready: break
      default: continue
      }
      let atLimit = configuration.maxTasksPerChild.map { workers[index].jobsAssigned >= $0 } ?? false
      guard shuttingDown || atLimit else { continue }
      workers[index].phase = .retiring
      if atLimit { statistics.workersRetired += 1 }
      if workers[index].enqueue(.stop, id: 0, payload: []) {
        effects.flushes.append(workers[index].id)
      }
    }
  }

  /// Stops taking work. With `cancelFutures`, queued jobs are cancelled.
  mutating func shutdown(cancelFutures: Bool, now: MonotonicInstant, _ effects: inout PoolEffects) {
    self.now = now
    if lifecycle == .running { lifecycle = .shuttingDown }
    if cancelFutures { effects.cancellations += queue.removeAll().map(\.sink) }
    advance(&effects)
  }

  /// `terminateWorkers`/`killWorkers`: cancel queued work, signal every worker (SIGTERM
  /// escalates to SIGKILL after the grace period), fail its work when it exits, replace nobody.
  mutating func forceShutdown(signal: Int32, now: MonotonicInstant, _ effects: inout PoolEffects) {
    self.now = now
    if lifecycle == .running { lifecycle = .shuttingDown }
    forced = true
    effects.cancellations += queue.removeAll().map(\.sink)
    let killAt = signal == SIGKILL ? nil : now.advanced(by: configuration.terminationGracePeriod)
    for index in workers.indices where workers[index].phase != .exited {
      // Its running work fails when it has exited (with how it ended); a result it sends
      // meanwhile (a task that ignores SIGTERM) is dropped, not delivered.
      workers[index].headDeadline = nil
      if case .terminating(let earlier) = workers[index].phase {
        // Already being stopped: only a SIGKILL now can make that sooner.
        if signal == SIGKILL, earlier != nil {
          workers[index].phase = .terminating(killAt: nil)
          effects.signals.append(workers[index].signalling(SIGKILL))
        }
        continue
      }
      workers[index].phase = .terminating(killAt: killAt)
      workers[index].stopReason = ProcessPoolError(.brokenPool, "the pool was forcefully shut down")
      effects.signals.append(workers[index].signalling(signal))
    }
    effects.wakeIO = true
    advance(&effects)
  }

  /// The first thread to need the I/O thread starts it: true for that one, false when it runs.
  mutating func claimIOThreadStart() -> Bool {
    if ioThreadRunning { return false }
    ioThreadRunning = true
    return true
  }

  /// The I/O thread is about to start, waking through `wakeChannel`.
  mutating func ioThreadStarting(wakeChannel: (read: Socket, write: Socket)) {
    self.wakeChannel = wakeChannel
  }

  /// The I/O thread returned: the pool is stopped and its wake-up channel goes with it.
  mutating func ioThreadEnded() {
    ioThreadRunning = false
    wakeChannel = nil
  }

  /// The I/O thread could not start: the spawns asked for will not happen, and without that
  /// thread the pool cannot run anything.
  mutating func ioThreadFailedToStart(
    spawns: [Int], _ reason: String, now: MonotonicInstant, _ effects: inout PoolEffects
  ) {
    self.now = now
    ioThreadRunning = false
    spawning -= spawns.count
    for launcher in spawns { launcherSpawning[launcher] -= 1 }
    breakPool(ProcessPoolError(.brokenPool, "cannot start the pool's I/O thread: \(reason)"), &effects)
  }

  /// Fails everything and stops every worker: the pool takes no more work.
  mutating func breakPool(_ error: ProcessPoolError, _ effects: inout PoolEffects) {
    if case .broken(let first) = lifecycle {
      for job in queue.removeAll() { effects.failures.append((job.sink, first)) }
      advance(&effects)
      return
    }
    if lifecycle == .stopped { return }
    lifecycle = .broken(error)
    brokenReason = error
    effects.logs.append((.error, "pool broken: \(error.message)"))
    for job in queue.removeAll() { effects.failures.append((job.sink, error)) }
    for index in workers.indices {
      for job in workers[index].inflight { effects.failures.append((job.sink, error)) }
      workers[index].inflight = []
      workers[index].headDeadline = nil
      if workers[index].phase != .exited {
        workers[index].phase = .terminating(killAt: nil)
        effects.signals.append(workers[index].signalling(SIGKILL))
      }
    }
    advance(&effects)
  }
}
