/// What happens to the pool when a worker starts, talks, times out or dies.
extension PoolState {
  /// How many workers in a row may die before their hello until the pool gives up.
  static let startFailureLimit = 3

  mutating func workerSpawned(pid: Int32, socket: Socket, initializer: [UInt8]?, _ effects: inout PoolEffects) -> Int {
    spawning -= 1
    nextWorkerID += 1
    var slot = WorkerSlot(id: nextWorkerID, pid: pid, socket: socket)
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

  mutating func spawnFailed(_ error: ProcessPoolError, _ effects: inout PoolEffects) {
    spawning -= 1
    if workers.isEmpty || forced == false && startFailures + 1 >= Self.startFailureLimit {
      breakPool(ProcessPoolError(.brokenPool, "a worker could not be started: \(error.message)"), &effects)
    } else {
      startFailures += 1
      effects.logs.append((.error, "a worker could not be started: \(error.message)"))
      advance(&effects)
    }
  }

  mutating func hello(worker id: Int, version: UInt32, pid: Int32, _ effects: inout PoolEffects) {
    guard let index = index(ofWorker: id) else { return }
    guard version == Frame.protocolVersion, pid == workers[index].pid else {
      protocolViolation(
        worker: id, "the worker speaks protocol \(version) (expected \(Frame.protocolVersion)) or has another pid",
        &effects)
      return
    }
    workers[index].saidHello = true
    workers[index].startDeadline = nil
    if case .starting = workers[index].phase { workers[index].phase = .ready }
    if case .awaitingBootstrap = workers[index].phase { workers[index].phase = .ready }
    startFailures = 0
    if let head = workers[index].inflight.first, let timeout = head.timeout {
      workers[index].headDeadline = ContinuousClock.now.advanced(by: timeout)
      effects.wakeIO = true
    }
  }

  mutating func awaitingBootstrap(worker id: Int, _ effects: inout PoolEffects) {
    guard let index = index(ofWorker: id) else { return }
    workers[index].phase = .awaitingBootstrap
    workers[index].startDeadline = ContinuousClock.now.advanced(by: configuration.bootstrapTimeout)
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
  /// (then the worker is stopped as a protocol violation).
  mutating func resultArrived(worker id: Int, requestID: UInt64, _ effects: inout PoolEffects) -> (Job, Int32)? {
    guard let index = index(ofWorker: id) else { return nil }
    guard let head = workers[index].inflight.first, head.id == requestID else {
      protocolViolation(worker: id, "a result for request \(requestID), which it was not running", &effects)
      return nil
    }
    workers[index].inflight.removeFirst()
    statistics.tasksCompleted += 1
    if let next = workers[index].inflight.first, let timeout = next.timeout {
      workers[index].headDeadline = ContinuousClock.now.advanced(by: timeout)
      effects.wakeIO = true
    } else {
      workers[index].headDeadline = nil
    }
    advance(&effects)
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
    let grace = signal == 9 ? nil : ContinuousClock.now.advanced(by: configuration.terminationGracePeriod)
    workers[index].phase = .terminating(killAt: grace)
    effects.signals.append((workers[index].pid, signal))
    effects.wakeIO = true
    advance(&effects)
  }

  /// Deadlines: per-task timeouts, SIGKILL after the grace period, a bootstrap that never came.
  /// Returns the next deadline.
  mutating func checkDeadlines(now: ContinuousClock.Instant, _ effects: inout PoolEffects) -> ContinuousClock.Instant? {
    var next: ContinuousClock.Instant?
    func consider(_ instant: ContinuousClock.Instant?) {
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
          effects.signals.append((pid, 9))
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
      startFailures += 1
      if startFailures >= Self.startFailureLimit {
        breakPool(
          ProcessPoolError(
            .brokenPool, "\(startFailures) workers in a row died while starting, the last with \(termination)",
            workerPID: pid, termination: termination), &effects)
        return
      }
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
          .workerCrashed, "the worker running this task died with \(termination)", workerPID: pid,
          termination: termination)
      statistics.tasksFailed += 1
      if configuration.crashPolicy == .breakPool && slot.stopReason == nil {
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
    if !killedByPool && slot.phase != .retiring {
      statistics.workersCrashed += 1
      effects.logs.append((.warning, "worker \(pid) died with \(termination); it is replaced"))
    }
    queue.prepend(inflight)
    advance(&effects)
  }
}
