import CProcessPoolShims

#if canImport(Glibc)
  import Glibc
#endif

/// What happens to the pool when a worker starts, talks, times out or dies.
extension PoolState {
  /// How many workers of a launcher in a row may die before their hello until it is given up.
  static let startFailureLimit = 3

  mutating func workerSpawned(
    launcher: Int, _ worker: SpawnedWorker, spawnedAt: MonotonicInstant, initializer: [UInt8]?,
    _ effects: inout PoolEffects
  ) -> Int {
    now = spawnedAt
    spawnRetryAt = nil
    spawning -= 1
    launcherSpawning[launcher] -= 1
    nextWorkerID += 1
    var slot = WorkerSlot(
      id: nextWorkerID, launcher: launcher, launched: launchers[launcher].arguments != nil, pid: worker.pid,
      socket: worker.socket, ring: worker.ring, pidfd: worker.pidfd, standardError: worker.standardError,
      spawnedAt: spawnedAt)
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

  /// How long to wait before spawning again after the system ran out of descriptors or
  /// processes while other workers run.
  static let spawnRetryDelay = Duration.milliseconds(200)

  mutating func spawnFailed(
    launcher: Int, _ error: ProcessPoolError, exhausted: Bool, now: MonotonicInstant, _ effects: inout PoolEffects
  ) {
    self.now = now
    spawning -= 1
    launcherSpawning[launcher] -= 1
    // Out of descriptors or processes is the system's state, not the launcher's fault: while
    // some worker runs, go on with the workers there are and try again later (said once).
    if exhausted && workers.contains(where: { $0.phase != .exited }) {
      if spawnRetryAt == nil {
        effects.logs.append(
          (.warning, "cannot start another worker now (\(error.message)); going on with \(workers.count) and retrying"))
      }
      spawnRetryAt = now.advanced(by: Self.spawnRetryDelay)
      effects.wakeIO = true
      return
    }
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

  mutating func hello(worker id: Int, version: UInt32, pid: Int32, now: MonotonicInstant, _ effects: inout PoolEffects)
  {
    self.now = now
    guard let index = index(ofWorker: id) else { return }
    // A worker being stopped changes nothing by what it still sends, as with its results: a
    // hello its launcher held back (srun without -u) until the launch timeout stopped it must
    // not reset the launcher's count of failed starts.
    if case .terminating = workers[index].phase { return }
    // A frame that only makes sense once, at start: from anything but a starting worker it is
    // forged (a task writing to its socket) or garbage.
    guard !workers[index].saidHello, workers[index].phase == .starting else {
      protocolViolation(worker: id, "a hello from a worker that had already said hello", now: now, &effects)
      return
    }
    guard version == Frame.protocolVersion else {
      // Most likely a worker binary of another release of this library (on another host).
      let launcher = workers[index].launcher
      let message =
        "the worker (\(launchers[launcher])) speaks protocol version \(version), this program \(Frame.protocolVersion): "
        + "run the same build on both sides"
      protocolViolation(worker: id, message, now: now, &effects)
      giveUp(launcher: launcher, ProcessPoolError(.brokenPool, message), &effects)
      return
    }
    // A launched worker reports its own pid on its host; a local one must be the process spawned.
    if launchers[workers[index].launcher].arguments == nil, pid != workers[index].pid {
      protocolViolation(worker: id, "the worker says it is pid \(pid), not \(workers[index].pid)", now: now, &effects)
      return
    }
    workers[index].remotePID = pid
    workers[index].saidHello = true
    statistics.timeStartingWorkers += workers[index].spawnedAt.duration(to: now)
    workers[index].launchDeadline = nil
    if case .starting = workers[index].phase { workers[index].phase = .ready }
    // Started for good once its initializer, if any, has succeeded too.
    if !workers[index].initializing { launcherStartFailures[workers[index].launcher] = 0 }
    if let head = workers[index].inflight.first, let timeout = head.timeout {
      workers[index].headDeadline = now.advanced(by: timeout)
      effects.wakeIO = true
    }
    // A launched worker takes work from now on.
    if workers[index].launched { advance(&effects) }
  }

  /// The initializer's outcome; a failure breaks the pool with its error in the message. Only a
  /// worker running its initializer may send it: from any other it is forged (by a task).
  mutating func initialized(worker id: Int, failure: String?, now: MonotonicInstant, _ effects: inout PoolEffects) {
    self.now = now
    guard let index = index(ofWorker: id) else { return }
    guard workers[index].initializing, workers[index].saidHello else {
      protocolViolation(
        worker: id, "an initializer outcome from a worker that was not initializing", now: now, &effects)
      return
    }
    workers[index].initializing = false
    if failure == nil { launcherStartFailures[workers[index].launcher] = 0 }
    if let failure {
      breakPool(
        ProcessPoolError(.brokenPool, "the worker initializer failed: \(failure)", workerPID: workers[index].pid),
        &effects)
      return
    }
    // Work is handed to a worker only once its initializer has succeeded.
    advance(&effects)
  }

  /// A `results` frame: the head job is done. Returns it for delivery, or nil on a mismatch
  /// (then the worker is stopped as a protocol violation). The caller runs `advance` once after
  /// a batch of results.
  mutating func resultArrived(worker id: Int, requestID: UInt64, now: MonotonicInstant, _ effects: inout PoolEffects)
    -> (Job, Int32)?
  {
    self.now = now
    guard let index = index(ofWorker: id) else { return nil }
    // A worker being stopped may still answer; its work was already failed or put back.
    if case .terminating = workers[index].phase { return nil }
    guard let head = workers[index].inflight.first, head.id == requestID else {
      protocolViolation(worker: id, "a result for request \(requestID), which it was not running", now: now, &effects)
      return nil
    }
    workers[index].inflight.removeFirst()
    if configuration.adaptivePipelining { workers[index].headFinished(at: now) }
    statistics.tasksCompleted += 1
    if let next = workers[index].inflight.first, let timeout = next.timeout {
      workers[index].headDeadline = now.advanced(by: timeout)
      effects.wakeIO = true
    } else {
      workers[index].headDeadline = nil
    }
    return (head, workers[index].pid)
  }

  /// The worker broke the protocol (garbage, a flood, a bad handshake): it is killed and treated
  /// as crashed, with `message` as the reason.
  mutating func protocolViolation(
    worker id: Int, _ message: String, now: MonotonicInstant, _ effects: inout PoolEffects
  ) {
    self.now = now
    guard let index = index(ofWorker: id) else { return }
    let pid = workers[index].pid
    effects.logs.append((.error, "worker \(pid) broke the protocol: \(message)"))
    stop(
      workerAt: index,
      failing: ProcessPoolError(.protocolViolation, "the worker broke the protocol: \(message)", workerPID: pid),
      signal: SIGKILL, now: now, &effects)
  }

  /// `cancel(terminatingWorker: true)` on a running future: stops the worker only when this
  /// future's job is the one it runs. Returns that job (taken off the worker, for the caller to
  /// cancel and fail), or nil when the job is not running: one handed to a worker behind
  /// another cannot be stopped without stopping that other task, so it is left to run.
  mutating func stopWorker(running future: ObjectIdentifier, now: MonotonicInstant, _ effects: inout PoolEffects)
    -> Job?
  {
    self.now = now
    // Its hello may not have been read yet (a local worker gets work before it): the job is
    // still the one it runs or is about to run.
    guard let index = workers.firstIndex(where: { $0.inflight.first?.sink.contains(future) == true }) else {
      return nil
    }
    switch workers[index].phase {
    case .starting, .ready, .retiring: break
    default: return nil
    }
    return stop(
      workerAt: index,
      reason: ProcessPoolError(
        .cancelled, "the task was cancelled while running; its worker was stopped", workerPID: workers[index].pid),
      signal: SIGTERM, now: now, &effects)
  }

  /// Stops a worker by signal (SIGKILL after the grace period for SIGTERM) and returns the job
  /// it was running, taken off it; work queued behind that job goes back to the queue.
  @discardableResult
  private mutating func stop(
    workerAt index: Int, reason: ProcessPoolError, signal: Int32, now: MonotonicInstant, _ effects: inout PoolEffects
  ) -> Job? {
    if workers[index].phase == .exited { return nil }
    if case .terminating = workers[index].phase { return nil }
    var inflight = workers[index].inflight[...]
    let head = inflight.popFirst()
    queue.prepend(inflight)
    workers[index].inflight = []
    workers[index].headDeadline = nil
    workers[index].stopReason = reason
    let grace = signal == SIGKILL ? nil : now.advanced(by: configuration.terminationGracePeriod)
    workers[index].phase = .terminating(killAt: grace)
    effects.signals.append(workers[index].signalling(signal))
    effects.wakeIO = true
    advance(&effects)
    return head
  }

  /// Stops a worker and fails the job it was running with `reason`.
  private mutating func stop(
    workerAt index: Int, failing reason: ProcessPoolError, signal: Int32, now: MonotonicInstant,
    _ effects: inout PoolEffects
  ) {
    guard let head = stop(workerAt: index, reason: reason, signal: signal, now: now, &effects) else { return }
    effects.failures.append((head.sink, reason))
    statistics.tasksFailed += 1
  }

  /// Deadlines: per-task timeouts, SIGKILL after the grace period, a spawn retry, a launched
  /// worker's hello that never came.
  /// Returns the next deadline.
  mutating func checkDeadlines(now: MonotonicInstant, _ effects: inout PoolEffects) -> MonotonicInstant? {
    self.now = now
    var next: MonotonicInstant?
    func consider(_ instant: MonotonicInstant?) {
      guard let instant else { return }
      if next == nil || instant < next! { next = instant }
    }
    if let retry = spawnRetryAt {
      if retry <= now {
        spawnRetryAt = nil
        advance(&effects)
      } else {
        consider(retry)
      }
    }
    for index in workers.indices {
      let pid = workers[index].pid
      if let deadline = workers[index].headDeadline {
        if deadline <= now, let head = workers[index].inflight.first {
          let limit = head.timeout.map { "\($0)" } ?? "its timeout"
          statistics.tasksTimedOut += 1
          stop(
            workerAt: index,
            failing: ProcessPoolError(
              .taskTimedOut, "the task ran longer than \(limit); its worker was stopped", workerPID: pid),
            signal: SIGTERM, now: now, &effects)
        } else {
          consider(deadline)
        }
      }
      if case .terminating(let killAt?) = workers[index].phase {
        if killAt <= now {
          workers[index].phase = .terminating(killAt: nil)
          effects.signals.append(workers[index].signalling(SIGKILL))
        } else {
          consider(killAt)
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

  /// The worker exited and was reaped: fail or requeue its work, replace or break. `phase` is
  /// the one the worker had when its exit was seen; `termination` is nil when the system kept
  /// no status (SIGCHLD ignored by this process).
  mutating func workerExited(
    worker id: Int, phase: WorkerSlot.Phase, termination: ProcessPoolError.Termination?, now: MonotonicInstant,
    _ effects: inout PoolEffects
  ) {
    self.now = now
    guard let index = index(ofWorker: id) else { return }
    var slot = workers.remove(at: index)
    slot.phase = phase
    let pid = slot.pid
    let ended = Self.describe(termination)
    let graceful =
      slot.phase == .retiring && slot.inflight.isEmpty && (termination == .exited(0) || termination == nil)
    if graceful {
      advance(&effects)
      return
    }
    // Work it had not finished goes back to the queue first, so a pool broken below fails it
    // with the rest instead of forgetting it.
    let unfinished = slot.inflight
    slot.inflight = []
    // Not started: no hello yet, or its initializer had not finished (it was given no work).
    let diedStarting = (!slot.saidHello || slot.initializing) && slot.stopReason == nil
    if diedStarting {
      // A job sent before the hello provably never started (the hello comes first).
      queue.prepend(unfinished)
    } else {
      slot.inflight = unfinished
    }
    if diedStarting {
      let during = slot.saidHello ? "in its initializer" : "before its hello"
      if configuration.crashPolicy == .breakPool {
        // CPython's rule: any unexpected death of a worker breaks the pool.
        breakPool(
          ProcessPoolError(
            .brokenPool, "a worker\(whereRunning(slot)) died \(during) with \(ended)", workerPID: pid,
            termination: termination), &effects)
        return
      }
      let launcher = launchers[slot.launcher]
      let broke = startFailed(
        launcher: slot.launcher,
        ProcessPoolError(
          .brokenPool,
          "\(launcherStartFailures[slot.launcher] + 1) workers (\(launcher)) in a row died while starting "
            + "(\(during)), the last with \(ended)", workerPID: pid, termination: termination), &effects)
      _ = broke  // startFailed ran the dispatch pass, or broke the pool.
      return
    }
    if case .terminating = slot.phase, forced {
      for job in slot.inflight {
        effects.failures.append(
          (
            job.sink,
            ProcessPoolError(.brokenPool, "the pool was forcefully shut down", workerPID: pid, termination: termination)
          ))
      }
      statistics.workersStopped += 1
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
          .workerCrashed, "the worker\(whereRunning(slot)) running this task died with \(ended)", workerPID: pid,
          termination: termination)
      statistics.tasksFailed += 1
      effects.failures.append((head.sink, error))
    }
    var killedByPool = false
    if case .terminating = slot.phase { killedByPool = true }
    if killedByPool {
      statistics.workersStopped += 1
    } else if slot.phase != .retiring || termination != .exited(0) {
      statistics.workersCrashed += 1
      if let termination { statistics.crashes[termination, default: 0] += 1 }
      if configuration.crashPolicy == .breakPool {
        queue.prepend(inflight)
        breakPool(
          ProcessPoolError(
            .brokenPool, "a worker\(whereRunning(slot)) died with \(ended)", workerPID: pid,
            termination: termination), &effects)
        return
      }
      effects.logs.append((.warning, "worker \(pid)\(whereRunning(slot)) died with \(ended); it is replaced"))
    }
    queue.prepend(inflight)
    advance(&effects)
  }

  /// How a worker ended, in words, with what the worker's own exit statuses mean; nil is a
  /// status the system did not keep.
  static func describe(_ termination: ProcessPoolError.Termination?) -> String {
    guard let termination else {
      return
        "an unknown status (the system discarded the worker's exit status: this process ignores SIGCHLD, or the "
        + "fork server that started the worker died)"
    }
    guard case .exited(let code) = termination, let meaning = workerExitMeanings[code] else { return "\(termination)" }
    return "\(termination) (\(meaning))"
  }

  /// What the exit statuses a worker uses for itself mean (a task may use them too, hence "likely").
  static let workerExitMeanings: [Int32: String] = [
    PP_EXIT_NO_THREAD: "likely: the worker could not start a thread",
    PP_EXIT_UNEXPECTED_FRAME: "likely: the worker got a frame it does not understand",
    PP_EXIT_READ_FAILED: "likely: the worker could not read a task (malformed or too large)",
    PP_EXIT_REPLY_FAILED: "likely: the worker could not encode a reply",
    PP_EXIT_NO_STDIO: "likely: the launched worker could not take over its standard input and output",
    PP_EXIT_NO_RING: "likely: the worker could not map its reply ring (out of memory or descriptors)",
    PP_EXIT_NO_ENTRY: "likely: the worker loop cannot run in this executable",
  ]

  /// " (ssh host)" for a launched worker, "" for a local one: where a crash happened.
  private func whereRunning(_ slot: WorkerSlot) -> String {
    launchers[slot.launcher].arguments == nil ? "" : " (\(launchers[slot.launcher]))"
  }
}
