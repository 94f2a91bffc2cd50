/// What happens to the pool when a worker starts, talks, times out or dies.
extension PoolState {
  /// How many workers of a launcher in a row may die before their hello until it is given up.
  static let startFailureLimit = 3

  /// Worker `id` (an id the runtime chose, new) of `launcher` was spawned as process `pid`;
  /// `sharesMemory`: it has regions shared with the parent for large values.
  mutating func workerSpawned(
    worker id: Int, launcher: Int, pid: Int32, spawnedAt: MonotonicInstant, sharesMemory: Bool = false,
    initializer: [UInt8]?, _ effects: inout PoolEffects
  ) {
    now = spawnedAt
    spawnRetryAt = nil
    launcherSpawning[launcher] -= 1
    let launched = launchers[launcher].arguments != nil
    let launchDeadline = launched ? configuration.launchTimeout.map { spawnedAt.advanced(by: $0) } : nil
    let slot = WorkerSlot(
      id: id, launcher: launcher, launched: launched, pid: pid, spawnedAt: spawnedAt, sharesMemory: sharesMemory,
      phase: .starting(initializer: initializer != nil, launchDeadline: launchDeadline))
    if let initializer {
      var frame: [UInt8] = []
      let start = Frame.begin(.initialize, id: 0, into: &frame)
      frame.append(contentsOf: initializer)
      Frame.finish(at: start, in: &frame)
      effects.writes.append(PoolEffects.Write(worker: id, bytes: frame))
    }
    addSlot(slot)
    listIfAvailable(workers.count - 1)
    statistics.workersStarted += 1
    effects.wakeIO = true
    advance(&effects)
  }

  /// How long to wait before spawning again after the system ran out of descriptors or
  /// processes while other workers run.
  static let spawnRetryDelay = Duration.milliseconds(200)

  mutating func spawnFailed(
    launcher: Int, _ error: ProcessPoolError, exhausted: Bool, now: MonotonicInstant, _ effects: inout PoolEffects
  ) {
    self.now = now
    launcherSpawning[launcher] -= 1
    // Out of descriptors or processes is the system's state, not the launcher's fault: while
    // some worker runs or is on its way (a fork the server has yet to answer), go on with the
    // workers there are and try again later (said once).
    if exhausted && (spawning > 0 || workers.contains(where: { $0.phase != .exited })) {
      if spawnRetryAt == nil {
        let others = workers.isEmpty ? "\(spawning) on their way" : "\(workers.count)"
        effects.logs.append(
          (.warning, "cannot start another worker now (\(error.message)); going on with \(others) and retrying"))
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
  /// the launcher up; the pool breaks with `error` when no launcher is left.
  mutating func startFailed(launcher: Int, _ error: ProcessPoolError, _ effects: inout PoolEffects) {
    statistics.workersFailedToStart += 1
    launcherStartFailures[launcher] += 1
    if launcherStartFailures[launcher] >= Self.startFailureLimit {
      giveUp(launcher: launcher, error, &effects)
      return
    }
    effects.logs.append((.error, error.message))
    advance(&effects)
  }

  /// Starts no more workers with `launcher`; breaks the pool with `error` when it was the last.
  private mutating func giveUp(launcher: Int, _ error: ProcessPoolError, _ effects: inout PoolEffects) {
    launcherGivenUp[launcher] = true
    if !launcherGivenUp.contains(false) {
      breakPool(error, &effects)
      return
    }
    effects.logs.append((.error, "\(error.message); no more workers are started with \(launchers[launcher])"))
    advance(&effects)
  }

  mutating func hello(worker id: Int, version: UInt32, pid: Int32, now: MonotonicInstant, _ effects: inout PoolEffects)
  {
    self.now = now
    guard let index = index(ofWorker: id) else { return }
    let initializer: Bool
    let retiring: Bool
    switch workers[index].phase {
    case .starting(let runsInitializer, _): (initializer, retiring) = (runsInitializer, false)
    // Told to stop before its hello arrived (the pool shut down while it started): its hello
    // is still due, and it still counts as started only once it said it.
    case .retiring(from: .beforeHello(let runsInitializer)): (initializer, retiring) = (runsInitializer, true)
    // A worker being stopped changes nothing by what it still sends, as with its results: a
    // hello its launcher held back (srun without -u) until the launch timeout stopped it must
    // not reset the launcher's count of failed starts.
    case .terminating: return
    // A frame that only makes sense once, at start: from anything but a starting worker it is
    // forged (a task writing to its socket) or garbage.
    case .initializing, .ready, .retiring, .exited:
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
    statistics.timeStartingWorkers += workers[index].spawnedAt.duration(to: now)
    let startup: WorkerSlot.Startup = initializer ? .initializing : .ready
    workers[index].phase = retiring ? .retiring(from: startup) : initializer ? .initializing : .ready
    listIfAvailable(index)
    // Started for good once its initializer, if any, has succeeded too.
    if !initializer { launcherStartFailures[workers[index].launcher] = 0 }
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
    switch workers[index].phase {
    case .initializing: workers[index].phase = .ready
    case .retiring(from: .initializing): workers[index].phase = .retiring(from: .ready)
    // Being stopped: what it still sends changes nothing (as with a hello or results).
    case .terminating: return
    case .starting, .ready, .retiring, .exited:
      protocolViolation(
        worker: id, "an initializer outcome from a worker that was not initializing", now: now, &effects)
      return
    }
    listIfAvailable(index)
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
    if configuration.adaptivePipelining {
      // `Duration` arithmetic goes through 128-bit integers: skipped in the usual case.
      let share = workers.count / processors
      workers[index].headFinished(at: now, fastWithin: share <= 1 ? WorkerSlot.fastJob : WorkerSlot.fastJob * share)
    }
    listIfAvailable(index)
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
      signal: SignalNumber.kill, now: now, &effects)
  }

  /// `cancel(terminatingWorker: true)` on a running future: stops the worker only when this
  /// future's job is the one it runs. Returns that job (taken off the worker, for the caller to
  /// cancel and fail), or nil when the job is not running: one handed to a worker behind
  /// another cannot be stopped without stopping that other task, so it is left to run.
  mutating func stopWorker(
    running future: ObjectIdentifier, chunk: Int = 0, now: MonotonicInstant, _ effects: inout PoolEffects
  ) -> Job? {
    self.now = now
    // Its hello may not have been read yet (a local worker gets work before it): the job is
    // still the one it runs or is about to run.
    guard let index = workers.firstIndex(where: { $0.inflight.first?.sink.contains(future, chunk: chunk) == true })
    else {
      return nil
    }
    switch workers[index].phase {
    case .starting, .initializing, .ready, .retiring: break
    case .terminating, .exited: return nil
    }
    return stop(
      workerAt: index,
      reason: ProcessPoolError(
        .cancelled, "the task was cancelled while running; its worker was stopped", workerPID: workers[index].pid),
      signal: SignalNumber.terminate, now: now, &effects)
  }

  /// Stops a worker by signal (SIGKILL after the grace period for SIGTERM) and returns the job
  /// it was running, taken off it; work queued behind that job goes back to the queue.
  @discardableResult
  private mutating func stop(
    workerAt index: Int, reason: ProcessPoolError, signal: Int32, now: MonotonicInstant, _ effects: inout PoolEffects
  ) -> Job? {
    switch workers[index].phase {
    case .starting, .initializing, .ready, .retiring: break
    case .terminating, .exited: return nil
    }
    var inflight = workers[index].inflight[...]
    let head = inflight.popFirst()
    queue.prepend(inflight)
    workers[index].inflight = []
    workers[index].headDeadline = nil
    let grace = signal == SignalNumber.kill ? nil : now.advanced(by: configuration.terminationGracePeriod)
    workers[index].phase = .terminating(reason: reason, killAt: grace)
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
            signal: SignalNumber.terminate, now: now, &effects)
        } else {
          consider(deadline)
        }
      }
      switch workers[index].phase {
      case .terminating(let reason, let killAt?):
        if killAt <= now {
          workers[index].phase = .terminating(reason: reason, killAt: nil)
          effects.signals.append(workers[index].signalling(SignalNumber.kill))
        } else {
          consider(killAt)
        }
      case .starting(_, let deadline?):
        if deadline <= now {
          launchTimedOut(workerAt: index, &effects)
          if case .terminating(_, let killAt?) = workers[index].phase { consider(killAt) }
        } else {
          consider(deadline)
        }
      default:
        break
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
    let slot = removeSlot(at: index)
    effects.closes.append(id)
    switch phase {
    case .retiring where termination == .exited(0) || termination == nil:
      // Retired as asked (a retiring worker is given no work, so it held none).
      advance(&effects)
    case .starting, .retiring(from: .beforeHello):
      diedStarting(slot, during: "before its hello", termination, &effects)
    case .initializing, .retiring(from: .initializing):
      diedStarting(slot, during: "in its initializer", termination, &effects)
    case .terminating(let reason, _):
      stopped(slot, reason, termination, &effects)
    case .ready, .retiring(from: .ready), .exited:
      crashed(slot, termination, &effects)
    }
  }

  /// A worker died before it had started (no hello, or its initializer had not finished): a
  /// failed start of its launcher, or a broken pool under `.breakPool`. Jobs sent to it before
  /// its hello provably never started (the hello comes first): they go back to the queue.
  private mutating func diedStarting(
    _ slot: WorkerSlot, during: String, _ termination: ProcessPoolError.Termination?, _ effects: inout PoolEffects
  ) {
    // Back to the queue first, so a pool broken below fails them with the rest.
    queue.prepend(slot.inflight)
    let ended = Self.describe(termination)
    if configuration.crashPolicy == .breakPool {
      // CPython's rule: any unexpected death of a worker breaks the pool.
      breakPool(
        ProcessPoolError(
          .brokenPool, "a worker\(whereRunning(slot)) died \(during) with \(ended)", workerPID: slot.pid,
          termination: termination), &effects)
      return
    }
    // Runs the dispatch pass, or breaks the pool.
    startFailed(
      launcher: slot.launcher,
      ProcessPoolError(
        .brokenPool,
        "\(launcherStartFailures[slot.launcher] + 1) workers (\(launchers[slot.launcher])) in a row died while starting "
          + "(\(during)), the last with \(ended)", workerPID: slot.pid, termination: termination), &effects)
  }

  /// A worker the pool was stopping exited: the job it ran fails with the reason it was stopped
  /// for (with how it ended); under a forced shutdown all its work fails.
  private mutating func stopped(
    _ slot: WorkerSlot, _ reason: ProcessPoolError, _ termination: ProcessPoolError.Termination?,
    _ effects: inout PoolEffects
  ) {
    statistics.workersStopped += 1
    if forced {
      for job in slot.inflight {
        effects.failures.append(
          (
            job.sink,
            ProcessPoolError(
              .brokenPool, "the pool was forcefully shut down", workerPID: slot.pid, termination: termination)
          ))
      }
    } else {
      var inflight = slot.inflight[...]
      if let head = inflight.popFirst() {
        var error = reason
        error.termination = termination
        statistics.tasksFailed += 1
        effects.failures.append((head.sink, error))
      }
      queue.prepend(inflight)
    }
    advance(&effects)
  }

  /// A started worker died on its own: the job it ran fails, the work queued behind it goes back
  /// to the queue, and it is replaced (or the pool breaks under `.breakPool`).
  private mutating func crashed(
    _ slot: WorkerSlot, _ termination: ProcessPoolError.Termination?, _ effects: inout PoolEffects
  ) {
    let ended = Self.describe(termination)
    var inflight = slot.inflight[...]
    if let head = inflight.popFirst() {
      statistics.tasksFailed += 1
      effects.failures.append(
        (
          head.sink,
          ProcessPoolError(
            .workerCrashed, "the worker\(whereRunning(slot)) running this task died with \(ended)", workerPID: slot.pid,
            termination: termination)
        ))
    }
    statistics.workersCrashed += 1
    if let termination { statistics.crashes[termination, default: 0] += 1 }
    queue.prepend(inflight)
    if configuration.crashPolicy == .breakPool {
      breakPool(
        ProcessPoolError(
          .brokenPool, "a worker\(whereRunning(slot)) died with \(ended)", workerPID: slot.pid,
          termination: termination), &effects)
      return
    }
    effects.logs.append((.warning, "worker \(slot.pid)\(whereRunning(slot)) died with \(ended); it is replaced"))
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
    WorkerExitStatus.noThread: "likely: the worker could not start a thread",
    WorkerExitStatus.unexpectedFrame: "likely: the worker got a frame it does not understand",
    WorkerExitStatus.readFailed: "likely: the worker could not read a task (malformed or too large)",
    WorkerExitStatus.replyFailed: "likely: the worker could not encode a reply",
    WorkerExitStatus.noStandardIO: "likely: the launched worker could not take over its standard input and output",
    WorkerExitStatus.noRing: "likely: the worker could not map its reply ring (out of memory or descriptors)",
    WorkerExitStatus.noEntry: "likely: the worker loop cannot run in this executable",
  ]

  /// " (ssh host)" for a launched worker, "" for a local one: where a crash happened.
  private func whereRunning(_ slot: WorkerSlot) -> String {
    launchers[slot.launcher].arguments == nil ? "" : " (\(launchers[slot.launcher]))"
  }
}
