/// What happens to the pool when a worker starts, talks, times out or dies.
extension PoolState {
  /// How many workers of a launcher in a row may die before their hello until it is given up.
  static let startFailureLimit = 3

  mutating func workerSpawned(
    launcher: Int, pid: Int32, socket: Socket, ring: ReplyRing?, spawnedAt: MonotonicInstant,
    initializer: [UInt8]?, _ effects: inout PoolEffects
  ) -> Int {
    spawning -= 1
    launcherSpawning[launcher] -= 1
    nextWorkerID += 1
    var slot = WorkerSlot(
      id: nextWorkerID, launcher: launcher, launched: launchers[launcher].arguments != nil, pid: pid, socket: socket,
      ring: ring, spawnedAt: spawnedAt)
    if slot.launched, let timeout = configuration.launchTimeout {
      slot.launchDeadline = spawnedAt.advanced(by: timeout)
    }
    if let initializer {
      slot.initializing = true
      _ = slot.enqueue(.initialize, id: 0, payload: initializer)
      slot.flushing = true
      effects.flushes.append(slot.id)
    }
    workers.append(slot)
    statistics.workersStarted += 1
    effects.wakeIO = true
    advance(&effects)
    return slot.id
  }

  mutating func spawnFailed(launcher: Int, _ error: ProcessPoolError, _ effects: inout PoolEffects) {
    spawning -= 1
    launcherSpawning[launcher] -= 1
    startFailed(
      launcher: launcher,
      ProcessPoolError(.brokenPool, "a worker (\(launchers[launcher])) could not be started: \(error.message)"),
      &effects)
  }

  /// A worker of `launcher` died (or could not be spawned) before its hello. Three in a row give
  /// the launcher up; the pool breaks with `error` when no launcher is left. Returns whether it
  /// broke.
  @discardableResult
  mutating func startFailed(launcher: Int, _ error: ProcessPoolError, _ effects: inout PoolEffects) -> Bool {
    statistics.workersFailedToStart += 1
    launcherStartFailures[launcher] += 1
    if launcherStartFailures[launcher] >= Self.startFailureLimit { return giveUp(launcher: launcher, error, &effects) }
    effects.logs.append((.error, error.message))
    advance(&effects)
    return false
  }

  /// Starts no more workers with `launcher`; breaks the pool with `error` when it was the last.
  @discardableResult
  private mutating func giveUp(launcher: Int, _ error: ProcessPoolError, _ effects: inout PoolEffects) -> Bool {
    launcherGivenUp[launcher] = true
    if !launcherGivenUp.contains(false) {
      breakPool(error, &effects)
      return true
    }
    effects.logs.append((.error, "\(error.message); no more workers are started with \(launchers[launcher])"))
    advance(&effects)
    return false
  }

  mutating func hello(worker id: Int, version: UInt32, pid: Int32, _ effects: inout PoolEffects) {
    guard let index = index(ofWorker: id) else { return }
    // Held back by its launcher (srun without -u) until the pool stopped it at its launch
    // timeout: it changes nothing, above all not the launcher's count of failed starts.
    if case .terminating = workers[index].phase, workers[index].stopReason?.code == .workerStartFailed { return }
    guard version == Frame.protocolVersion else {
      // Most likely a worker binary of another release of this library (on another host).
      let launcher = workers[index].launcher
      let message =
        "the worker (\(launchers[launcher])) speaks protocol version \(version), this program \(Frame.protocolVersion): "
        + "run the same build on both sides"
      protocolViolation(worker: id, message, &effects)
      giveUp(launcher: launcher, ProcessPoolError(.brokenPool, message), &effects)
      return
    }
    // A launched worker reports its own pid on its host; a local one must be the process spawned.
    if launchers[workers[index].launcher].arguments == nil, pid != workers[index].pid {
      protocolViolation(worker: id, "the worker says it is pid \(pid), not \(workers[index].pid)", &effects)
      return
    }
    workers[index].remotePID = pid
    workers[index].saidHello = true
    statistics.timeStartingWorkers += workers[index].spawnedAt.duration(to: .now)
    workers[index].startDeadline = nil
    workers[index].launchDeadline = nil
    if case .starting = workers[index].phase { workers[index].phase = .ready }
    if case .awaitingBootstrap = workers[index].phase { workers[index].phase = .ready }
    launcherStartFailures[workers[index].launcher] = 0
    if let head = workers[index].inflight.first, let timeout = head.timeout {
      workers[index].headDeadline = MonotonicInstant.now.advanced(by: timeout)
      effects.wakeIO = true
    }
    // A launched worker takes work from now on.
    if workers[index].launched { advance(&effects) }
  }

  mutating func awaitingBootstrap(worker id: Int, _ effects: inout PoolEffects) {
    guard let index = index(ofWorker: id) else { return }
    workers[index].phase = .awaitingBootstrap
    workers[index].startDeadline = MonotonicInstant.now.advanced(by: configuration.bootstrapTimeout)
    effects.wakeIO = true
  }

  /// The initializer's outcome; a failure breaks the pool with its error in the message.
  mutating func initialized(worker id: Int, failure: String?, _ effects: inout PoolEffects) {
    guard let index = index(ofWorker: id) else { return }
    workers[index].initializing = false
    if let failure {
      breakPool(
        ProcessPoolError(.brokenPool, "the worker initializer failed: \(failure)", workerPID: workers[index].pid),
        &effects)
    }
  }

  /// A `results` frame: the head job is done. Returns it for delivery, or nil on a mismatch
  /// (then the worker is stopped as a protocol violation). The caller runs `advance` once after
  /// a batch of results.
  mutating func resultArrived(worker id: Int, requestID: UInt64, _ effects: inout PoolEffects) -> (Job, Int32)? {
    guard let index = index(ofWorker: id) else { return nil }
    guard let head = workers[index].inflight.first, head.id == requestID else {
      protocolViolation(worker: id, "a result for request \(requestID), which it was not running", &effects)
      return nil
    }
    workers[index].inflight.removeFirst()
    if configuration.adaptivePipelining { workers[index].headFinished(at: .now) }
    statistics.tasksCompleted += 1
    if let next = workers[index].inflight.first, let timeout = next.timeout {
      workers[index].headDeadline = MonotonicInstant.now.advanced(by: timeout)
      effects.wakeIO = true
    } else {
      workers[index].headDeadline = nil
    }
    return (head, workers[index].pid)
  }

  /// The worker broke the protocol (garbage, a flood, a bad handshake): it is killed and treated
  /// as crashed, with `message` as the reason.
  mutating func protocolViolation(worker id: Int, _ message: String, _ effects: inout PoolEffects) {
    guard let index = index(ofWorker: id) else { return }
    let pid = workers[index].pid
    effects.logs.append((.error, "worker \(pid) broke the protocol: \(message)"))
    stop(
      workerAt: index,
      reason: ProcessPoolError(.protocolViolation, "the worker broke the protocol: \(message)", workerPID: pid),
      signal: 9, &effects)
  }

  /// Stops a worker by signal; the job it runs fails with `reason` now, work queued behind it
  /// goes back to the queue.
  /// `cancel(terminatingWorker: true)` on a running future: stop the worker running it (only
  /// when it is that worker's current job; one queued behind is skipped as cancelled).
  mutating func stopWorker(running future: ObjectIdentifier, _ effects: inout PoolEffects) {
    guard let index = workers.firstIndex(where: { $0.inflight.first?.sink.contains(future) == true }) else { return }
    stop(
      workerAt: index,
      reason: ProcessPoolError(
        .cancelled, "the task was cancelled while running; its worker was stopped", workerPID: workers[index].pid),
      signal: 15, &effects)
  }

  private mutating func stop(workerAt index: Int, reason: ProcessPoolError, signal: Int32, _ effects: inout PoolEffects)
  {
    if workers[index].phase == .exited { return }
    if case .terminating = workers[index].phase { return }
    if let head = workers[index].inflight.first {
      workers[index].inflight.removeFirst()
      effects.failures.append((head.sink, reason))
      statistics.tasksFailed += 1
    }
    queue.prepend(workers[index].inflight)
    workers[index].inflight = []
    workers[index].headDeadline = nil
    workers[index].stopReason = reason
    let grace = signal == 9 ? nil : MonotonicInstant.now.advanced(by: configuration.terminationGracePeriod)
    workers[index].phase = .terminating(killAt: grace)
    effects.signals.append((workers[index].signalTarget, signal))
    effects.wakeIO = true
    advance(&effects)
  }

  /// Deadlines: per-task timeouts, SIGKILL after the grace period, a bootstrap that never came,
  /// a launched worker's hello that never came.
  /// Returns the next deadline.
  mutating func checkDeadlines(now: MonotonicInstant, _ effects: inout PoolEffects) -> MonotonicInstant? {
    var next: MonotonicInstant?
    func consider(_ instant: MonotonicInstant?) {
      guard let instant else { return }
      if next == nil || instant < next! { next = instant }
    }
    for index in workers.indices {
      let pid = workers[index].pid
      if let deadline = workers[index].headDeadline {
        if deadline <= now, let head = workers[index].inflight.first {
          let limit = head.timeout.map { "\($0)" } ?? "its timeout"
          statistics.tasksTimedOut += 1
          stop(
            workerAt: index,
            reason: ProcessPoolError(
              .taskTimedOut, "the task ran longer than \(limit); its worker was stopped", workerPID: pid),
            signal: 15, &effects)
        } else {
          consider(deadline)
        }
      }
      if case .terminating(let killAt?) = workers[index].phase {
        if killAt <= now {
          workers[index].phase = .terminating(killAt: nil)
          effects.signals.append((workers[index].signalTarget, 9))
        } else {
          consider(killAt)
        }
      }
      if let deadline = workers[index].startDeadline {
        if deadline <= now {
          workers[index].startDeadline = nil
          breakPool(
            ProcessPoolError(
              .workerStartFailed, "the worker loop never started; " + WorkerSpawner.bootstrapAdvice, workerPID: pid),
            &effects)
        } else {
          consider(deadline)
        }
      }
      if let deadline = workers[index].launchDeadline {
        if deadline <= now {
          launchTimedOut(workerAt: index, &effects)
          if case .terminating(let killAt?) = workers[index].phase { consider(killAt) }
        } else {
          consider(deadline)
        }
      }
    }
    return next
  }

  /// The worker's socket ended and it was reaped: fail or requeue its work, replace or break.
  /// `phase` is the one the worker had when its socket ended.
  mutating func workerExited(
    worker id: Int, phase: WorkerSlot.Phase, termination: ProcessPoolError.Termination, _ effects: inout PoolEffects
  ) {
    guard let index = index(ofWorker: id) else { return }
    var slot = workers.remove(at: index)
    slot.phase = phase
    let pid = slot.pid
    let graceful = slot.phase == .retiring && slot.inflight.isEmpty && termination == .exited(0)
    if graceful {
      advance(&effects)
      return
    }
    // Work it had not finished goes back to the queue first, so a pool broken below fails it
    // with the rest instead of forgetting it.
    let unfinished = slot.inflight
    slot.inflight = []
    if slot.phase == .awaitingBootstrap || slot.startDeadline != nil || (!slot.saidHello && slot.stopReason == nil) {
      queue.prepend(unfinished)
    } else {
      slot.inflight = unfinished
    }
    if slot.phase == .awaitingBootstrap || slot.startDeadline != nil {
      breakPool(
        ProcessPoolError(
          .workerStartFailed,
          "the worker exited (\(termination)) without running its loop; " + WorkerSpawner.bootstrapAdvice,
          workerPID: pid, termination: termination), &effects)
      return
    }
    if !slot.saidHello && slot.stopReason == nil {
      let launcher = launchers[slot.launcher]
      let broke = startFailed(
        launcher: slot.launcher,
        ProcessPoolError(
          .brokenPool,
          "\(launcherStartFailures[slot.launcher] + 1) workers (\(launcher)) in a row died while starting, "
            + "the last with \(termination)", workerPID: pid, termination: termination), &effects)
      if broke { return }
    }
    if case .terminating = slot.phase, forced {
      for job in slot.inflight {
        effects.failures.append(
          (
            job.sink,
            ProcessPoolError(.brokenPool, "the pool was forcefully shut down", workerPID: pid, termination: termination)
          ))
      }
      advance(&effects)
      return
    }
    var inflight = slot.inflight[...]
    if let head = inflight.popFirst() {
      let error =
        slot.stopReason.map { reason -> ProcessPoolError in
          var error = reason
          error.termination = termination
          return error
        }
        ?? ProcessPoolError(
          .workerCrashed, "the worker\(whereRunning(slot)) running this task died with \(termination)", workerPID: pid,
          termination: termination)
      statistics.tasksFailed += 1
      if configuration.crashPolicy == .breakPool && slot.stopReason == nil {
        statistics.workersCrashed += 1
        statistics.crashes[termination, default: 0] += 1
        effects.failures.append((head.sink, error))
        queue.prepend(inflight)
        breakPool(
          ProcessPoolError(
            .brokenPool, "a worker died with \(termination) while running a task", workerPID: pid,
            termination: termination), &effects)
        return
      }
      effects.failures.append((head.sink, error))
    }
    var killedByPool = false
    if case .terminating = slot.phase { killedByPool = true }
    if killedByPool {
      statistics.workersStopped += 1
    } else if slot.phase != .retiring && slot.saidHello {
      statistics.workersCrashed += 1
      statistics.crashes[termination, default: 0] += 1
      effects.logs.append((.warning, "worker \(pid)\(whereRunning(slot)) died with \(termination); it is replaced"))
    }
    queue.prepend(inflight)
    advance(&effects)
  }

  /// " (ssh host)" for a launched worker, "" for a local one: where a crash happened.
  private func whereRunning(_ slot: WorkerSlot) -> String {
    launchers[slot.launcher].arguments == nil ? "" : " (\(launchers[slot.launcher]))"
  }
}
