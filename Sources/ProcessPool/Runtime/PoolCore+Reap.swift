#if canImport(Glibc)
  import Glibc
#endif

/// Reaping workers, on the I/O thread: a worker of the fork server that exited is reaped by the
/// server while the thread goes on; its status and the tail of its stderr then go to the state.
extension PoolCore {
  /// A worker whose status the fork server has yet to send.
  struct PendingReap {
    let channel: WorkerChannel
    let phase: WorkerSlot.Phase?
    let request: ForkServer.Request
  }

  /// The worker exited, or its socket ended: make sure the process is gone, collect its
  /// status, hand it to the state with the tail of its stderr for the errors its death causes.
  /// A worker of the fork server that exited is reaped by it while this thread goes on
  /// (`reaps`, until its answer).
  func reap(_ channel: WorkerChannel, exited: Bool, _ poller: EventPoller, reaps: inout [PendingReap]) {
    let phase = state.withLock { $0.workerEnded(worker: channel.worker) }
    var graceful = false
    if case .retiring = phase { graceful = true }
    let signalTarget = channel.launched ? -channel.pid : channel.pid
    // A worker closes its socket only by exiting, unless it misbehaves: make sure it is dead
    // before blocking in waitpid. (Not reaped yet, so the pid cannot have been reused; for a
    // launcher, the rest of its process group goes too.)
    if !graceful || (exited && signalTarget < 0) { Syscall.kill(signalTarget, SIGKILL) }
    // Known to have exited: no blocking wait (with SIGCHLD ignored, a blocking waitpid would
    // wait for every other child too).
    if exited,
      let request = ForkServer.requestWait(
        channel.pid, noHang: true, poller: poller, owner: ObjectIdentifier(self),
        wake: { [weak self] in self?.wakeIOThread() })
    {
      // Both stay ready until the channel is closed: not watched meanwhile.
      poller.remove(channel.socket)
      if let pidfd = channel.pidfd { poller.remove(pidfd) }
      guard let answer = request.answer else {
        reaps.append(PendingReap(channel: channel, phase: phase, request: request))
        return
      }
      finishReap(channel, phase: phase, answer)
      return
    }
    var termination: ProcessPoolError.Termination?
    do {
      var status = exited ? try ForkServer.waitPID(channel.pid, noHang: true) : nil
      if status == nil { status = try ForkServer.waitPID(channel.pid, pidfd: channel.pidfd, noHang: false) }
      if let status { termination = Self.termination(fromWaitStatus: status) }
    } catch {
      // ECHILD: SIGCHLD is ignored here, so the system reaped the worker and kept no status.
      termination = nil
    }
    workerReaped(channel, phase: phase, termination: termination)
  }

  /// Hands the state the reaps the fork server answered.
  func finishReaps(_ reaps: inout [PendingReap]) {
    var index = 0
    while index < reaps.count {
      guard let answer = reaps[index].request.answer else {
        index += 1
        continue
      }
      let reap = reaps.remove(at: index)
      finishReap(reap.channel, phase: reap.phase, answer)
    }
  }

  private func finishReap(_ channel: WorkerChannel, phase: WorkerSlot.Phase?, _ answer: ForkServer.Request.Answer) {
    var termination: ProcessPoolError.Termination?
    switch answer {
    case .waited(let status?):
      termination = Self.termination(fromWaitStatus: status)
    case .waited(nil):
      // Still there (its pidfd said otherwise): waited for.
      let status = try? ForkServer.waitPID(channel.pid, pidfd: channel.pidfd, noHang: false)
      termination = status.map(Self.termination(fromWaitStatus:))
    case .failed, .lost, .forked:
      // Gone with a lost server, or already reaped: no status.
      termination = nil
    }
    workerReaped(channel, phase: phase, termination: termination)
  }

  /// The worker was reaped: the state lets it go, with the tail of its stderr.
  private func workerReaped(
    _ channel: WorkerChannel, phase: WorkerSlot.Phase?, termination: ProcessPoolError.Termination?
  ) {
    // Reaped: everything it wrote is in the pipe now.
    let report = channel.errorStream?.finish()
    // The state lets the worker go and asks for its channel to be closed.
    transition { state, effects in
      let failuresBefore = effects.failures.count
      let logsBefore = effects.logs.count
      state.workerExited(
        worker: channel.worker, phase: phase ?? .exited, termination: termination, now: .now, &effects)
      if let report {
        Self.attach(report, of: channel.pid, to: &effects, failuresFrom: failuresBefore, logsFrom: logsBefore)
      }
    }
    if let missed = channels.withLock({ $0.removeValue(forKey: channel.worker) }) {
      assertionFailure("the state did not let worker \(channel.worker) go when it was reaped")
      missed.close()
    }
  }

  /// Puts a dead worker's crash report on the errors its death caused (a crash, or a pool it
  /// broke), and its reason on the log line that reports the death.
  private static func attach(
    _ report: String, of pid: Int32, to effects: inout PoolEffects, failuresFrom: Int, logsFrom: Int
  ) {
    for index in failuresFrom..<effects.failures.count {
      let error = effects.failures[index].1
      guard error.workerPID == pid, error.code == .workerCrashed || error.code == .brokenPool else { continue }
      effects.failures[index].1.crashReport = report
    }
    guard let reason = ProcessPoolError.reason(inReport: report) else { return }
    for index in logsFrom..<effects.logs.count where effects.logs[index].1.contains("worker \(pid)") {
      effects.logs[index].1 += ": \(reason)"
    }
  }

  static func termination(fromWaitStatus status: Int32) -> ProcessPoolError.Termination {
    let signal = status & 0x7f
    if signal == 0 { return .exited((status >> 8) & 0xff) }
    return .signaled(signal)
  }
}
