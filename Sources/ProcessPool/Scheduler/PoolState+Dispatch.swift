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

  /// Queues a map's batch of chunks with one dispatch pass; nil when accepted, else the error to
  /// throw at the caller.
  mutating func submit(_ batch: any JobBatch, now: MonotonicInstant, _ effects: inout PoolEffects)
    -> ProcessPoolError?
  {
    self.now = now
    if let rejection { return rejection }
    queue.append(batch)
    statistics.tasksSubmitted += batch.jobCount
    advance(&effects)
    return nil
  }

  /// Runs after every event: dispatch, retire, and move the lifecycle on.
  mutating func advance(_ effects: inout PoolEffects) {
    dispatch(&effects)
    requestFeed(&effects)
    // A worker retired at its task limit is replaced at once, not once it has exited.
    if stopIdleWorkers(&effects) && !queue.isEmpty { dispatch(&effects) }
    switch lifecycle {
    case .shuttingDown, .broken:
      guard workers.isEmpty, spawning == 0, queue.isEmpty, sources.isEmpty else { return }
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
    guard anyLaunched else { return coming }
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
    // Whether the next job was left queued for want of room in a worker's shared region (see
    // `WorkerSlot.hasSharedRoom`): a worker with room for smaller jobs then stays listed.
    var waitedForRoom = false
    // 1. Idle workers first (CPython reuses an idle worker before starting one).
    while !queue.isEmpty, let index = takeAvailable(holding: 0...0) {
      if fill(index, while: { $0.queue.count > 0 }, &effects) == .waitsForRoom { waitedForRoom = true }
      listIfAvailable(index)
    }
    guard !queue.isEmpty else { return }
    // 2. Start workers for what is left, from the first launchers with room.
    spawnForQueue(&effects)
    // 3. Pipeline the rest onto busy workers, least loaded first, so a stream of small tasks
    //    never waits for a round trip; jobs that new workers will take stay queued.
    let coming = workersComing
    // Whether a worker was given its last job here (it could take one, so it was not finishing
    // before): it is replaced now, not at the next event.
    var gaveLastJob = false
    while queue.count > coming, let index = takeAvailable(holding: 0...Int.max) {
      let assignment = fill(index, while: { $0.queue.count > coming }, &effects)
      listIfAvailable(index)
      if workers[index].finishing { gaveLastJob = true }
      if assignment == .waitsForRoom { waitedForRoom = true }
      if assignment != .assigned { break }
    }
    assert(queue.count <= coming || waitedForRoom || !anyWorkerAvailable, "a worker with room was not listed")
    if gaveLastJob && !queue.isEmpty { spawnForQueue(&effects) }
  }

  /// Spawns workers for the queued jobs that no worker on its way will take, from the first
  /// launchers with room.
  private mutating func spawnForQueue(_ effects: inout PoolEffects) {
    guard canSpawn else { return }
    var wanted = queue.count - workersComing
    for launcher in launchers.indices where wanted > 0 && !launcherGivenUp[launcher] {
      // Never more workers that can run jobs than the launcher allows; a worker retired at its
      // task limit holds none and is not counted while it exits, and one given its last job
      // is replaced at once: the replacement arrives as a standby and takes work once that
      // worker retires (see `addSlot`). At most three processes per worker are alive: one
      // running, one standing by, one exiting (a bounded overlap).
      let limit = launchers[launcher].workers
      let coming = launcherSpawning[launcher]
      let running = launcherAlive[launcher] - launcherReplaced[launcher] - launcherFinishing[launcher]
      let count = min(wanted, limit - running - coming, 3 * limit - launcherAlive[launcher] - coming)
      guard count > 0 else { continue }
      launcherSpawning[launcher] += count
      effects.spawns += repeatElement(launcher, count: count)
      wanted -= count
    }
  }

  /// Whether some worker may take a job now, by looking at every one (for assertions only).
  private var anyWorkerAvailable: Bool {
    for index in workers.indices where isAvailable(index) { return true }
    return false
  }

  /// Whether `workers[index]` may take more jobs now. A deep pipeline (fast jobs) is topped
  /// up once half of it is done, not one job per result: one write and one wake-up of the
  /// worker for many jobs (hundreds of workers on a few processors would otherwise each be
  /// woken for every job).
  private func isAvailable(_ index: Int) -> Bool {
    guard workers[index].accepts(maxTasksPerChild: configuration.maxTasksPerChild) else { return false }
    let depth = workers[index].pipelineDepth(configuration)
    let held = workers[index].inflight.count
    return depth > configuration.jobsPerWorker ? held <= depth / 2 : held < depth
  }

  /// Lists `workers[index]` for dispatch, by the jobs it holds, if it may take one more now.
  /// Runs after every change that can let a worker take work: it was spawned, said hello,
  /// finished its initializer or a job, or was given one.
  mutating func listIfAvailable(_ index: Int) {
    let level = workers[index].inflight.count
    guard isAvailable(index) else { return }
    if workers[index].listedAt == level { return }
    workers[index].listedAt = level
    if available.list(workers[index].id, at: level, limit: 2 * workers.count + 16) {
      // Drop the stale entries (and doubles) so the level does not grow with every job.
      var kept: [Int] = []
      var seen = Set<Int>()
      for id in available.entries(at: level) {
        guard let other = slotIndex[id], workers[other].listedAt == level, seen.insert(id).inserted else { continue }
        kept.append(id)
      }
      available.replace(level: level, with: kept)
    }
  }

  /// The first listed worker that holds a number of jobs in `levels` and may take one more
  /// (the least loaded first); it is no longer listed.
  private mutating func takeAvailable(holding levels: ClosedRange<Int>) -> Int? {
    while let (id, level) = available.takeFirst(in: levels) {
      guard let index = slotIndex[id], workers[index].listedAt == level else { continue }
      workers[index].listedAt = nil
      if workers[index].inflight.count == level && isAvailable(index) { return index }
    }
    return nil
  }

  /// Gives `workers[index]` the next job, and a worker with a deep pipeline (fast jobs) more
  /// while `more` holds, up to its depth: one write and one wake-up of the worker for many
  /// jobs, where hundreds of workers on a few processors would otherwise each be woken for
  /// every job. Says how the last job it looked at went.
  private mutating func fill(
    _ index: Int, while more: (borrowing PoolState) -> Bool, _ effects: inout PoolEffects
  ) -> Assignment {
    var assignment = assignNext(to: index, &effects)
    let depth = workers[index].pipelineDepth(configuration)
    guard depth > configuration.jobsPerWorker else { return assignment }
    while assignment == .assigned && more(self) && workers[index].inflight.count < depth {
      assignment = assignNext(to: index, &effects)
    }
    return assignment
  }

  /// How handing a worker the next job went.
  private enum Assignment {
    case assigned
    case queueEmpty
    /// The next job waits for room in the worker's shared region: it stays first in the queue
    /// until a worker with room takes it (one that finishes a job is offered it again).
    case waitsForRoom
  }

  /// Sends the next job that was not cancelled to `workers[index]`.
  private mutating func assignNext(to index: Int, _ effects: inout PoolEffects) -> Assignment {
    while let job = queue.popFirst() {
      guard workers[index].hasSharedRoom(for: job) else {
        queue.prepend(CollectionOfOne(job))
        return .waitsForRoom
      }
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
      Frame.fillHeader(.run, id: job.id, in: &job.frame, trailing: job.tail.count)
      effects.writes.append(
        PoolEffects.Write(worker: workers[index].id, bytes: job.frame, run: job.id, tail: job.tail))
      // Its last job: `stop` goes right behind it, so the worker exits as soon as its reply is
      // out, without waiting for a frame once the parent has the reply (it is marked retiring
      // when that reply arrives, as a worker stopped when idle is).
      if let limit = configuration.maxTasksPerChild, workers[index].jobsAssigned >= limit {
        workers[index].stopSent = true
        workers[index].finishing = true
        launcherFinishing[workers[index].launcher] += 1
        effects.writes.append(PoolEffects.Write(worker: workers[index].id, bytes: Frame.bare(.stop)))
      }
      return .assigned
    }
    return .queueEmpty
  }

  /// Workers with nothing to do that must go: at their task limit, or the pool is shutting down
  /// and no work is left. True when a worker at its task limit was retired (it may be replaced).
  private mutating func stopIdleWorkers(_ effects: inout PoolEffects) -> Bool {
    let shuttingDown = lifecycle == .shuttingDown && queue.isEmpty && sources.isEmpty
    guard shuttingDown || configuration.maxTasksPerChild != nil else { return false }
    var retired = false
    for index in workers.indices where workers[index].isIdle {
      let startup: WorkerSlot.Startup
      switch workers[index].phase {
      case .starting(let initializer, _): startup = .beforeHello(initializer: initializer)
      case .initializing: startup = .initializing
      case .ready: startup = .ready
      case .retiring, .terminating, .exited: continue
      }
      let atLimit = configuration.maxTasksPerChild.map { workers[index].jobsAssigned >= $0 } ?? false
      guard shuttingDown || atLimit else { continue }
      workers[index].phase = .retiring(from: startup)
      if atLimit {
        statistics.workersRetired += 1
        workers[index].replaced = true
        launcherReplaced[workers[index].launcher] += 1
        if workers[index].finishing {
          workers[index].finishing = false
          launcherFinishing[workers[index].launcher] -= 1
        }
        promoteStandby(of: workers[index].launcher)
        retired = true
      }
      if !workers[index].stopSent {
        workers[index].stopSent = true
        effects.writes.append(PoolEffects.Write(worker: workers[index].id, bytes: Frame.bare(.stop)))
      }
    }
    return retired
  }

  /// Stops taking work. With `cancelFutures`, queued jobs are cancelled.
  mutating func shutdown(cancelFutures: Bool, now: MonotonicInstant, _ effects: inout PoolEffects) {
    self.now = now
    if lifecycle == .running { lifecycle = .shuttingDown }
    if cancelFutures {
      effects.cancellations += queue.removeAll()
      dropSources(ProcessPoolError(.cancelled, "the pool was shut down with cancelFutures"), &effects)
    }
    advance(&effects)
  }

  /// `terminateWorkers`/`killWorkers`: cancel queued work, signal every worker (SIGTERM
  /// escalates to SIGKILL after the grace period), fail its work when it exits, replace nobody.
  mutating func forceShutdown(signal: Int32, now: MonotonicInstant, _ effects: inout PoolEffects) {
    self.now = now
    if lifecycle == .running { lifecycle = .shuttingDown }
    forced = true
    effects.cancellations += queue.removeAll()
    dropSources(ProcessPoolError(.brokenPool, "the pool was forcefully shut down"), &effects)
    let killAt = signal == SignalNumber.kill ? nil : now.advanced(by: configuration.terminationGracePeriod)
    for index in workers.indices where workers[index].phase != .exited {
      // Its running work fails when it has exited (with how it ended); a result it sends
      // meanwhile (a task that ignores SIGTERM) is dropped, not delivered.
      workers[index].headDeadline = nil
      if case .terminating(let reason, let earlier) = workers[index].phase {
        // Already being stopped: only a SIGKILL now can make that sooner.
        if signal == SignalNumber.kill, earlier != nil {
          workers[index].phase = .terminating(reason: reason, killAt: nil)
          effects.signals.append(workers[index].signalling(SignalNumber.kill))
        }
        continue
      }
      workers[index].phase = .terminating(
        reason: ProcessPoolError(.brokenPool, "the pool was forcefully shut down"), killAt: killAt)
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

  /// The I/O thread returned: the pool is stopped.
  mutating func ioThreadEnded() {
    ioThreadRunning = false
  }

  /// The I/O thread could not start: the spawns asked for will not happen, and without that
  /// thread the pool cannot run anything.
  mutating func ioThreadFailedToStart(
    spawns: [Int], _ reason: String, now: MonotonicInstant, _ effects: inout PoolEffects
  ) {
    self.now = now
    ioThreadRunning = false
    for launcher in spawns { launcherSpawning[launcher] -= 1 }
    breakPool(ProcessPoolError(.brokenPool, "cannot start the pool's I/O thread: \(reason)"), &effects)
  }

  /// Fails everything and stops every worker: the pool takes no more work.
  mutating func breakPool(_ error: ProcessPoolError, _ effects: inout PoolEffects) {
    if lifecycle == .broken, let first = brokenReason {
      for sink in queue.removeAll() { effects.failures.append((sink, first)) }
      dropSources(first, &effects)
      advance(&effects)
      return
    }
    if lifecycle == .stopped { return }
    lifecycle = .broken
    brokenReason = error
    effects.logs.append((.error, "pool broken: \(error.message)"))
    for sink in queue.removeAll() { effects.failures.append((sink, error)) }
    dropSources(error, &effects)
    for index in workers.indices {
      for job in workers[index].inflight { effects.failures.append((job.sink, error)) }
      workers[index].inflight = []
      workers[index].headDeadline = nil
      if workers[index].phase != .exited {
        // Stopped by the pool: its death is no failed start or crash of its own.
        workers[index].phase = .terminating(reason: error, killAt: nil)
        effects.signals.append(workers[index].signalling(SignalNumber.kill))
      }
    }
    advance(&effects)
  }
}
