import CProcessPoolShims

#if canImport(Glibc)
  import Glibc
#endif

/// The I/O thread: one `poll` over every worker's socket and the wake-up pipe. It reads frames,
/// writes what a caller could not, reaps workers whose socket ended, and enforces deadlines.
/// It exits once the pool is stopped.
extension PoolCore {
  private struct Watched {
    let worker: Int
    let socket: Socket
    let pid: Int32
    let signalTarget: Int32
    let wantsWrite: Bool
    let ring: ReplyRing?
    /// Readable once the process has exited (nil where pidfds are not available).
    let pidfd: Socket?
    /// The read end of its stderr (nil when inherited).
    let standardError: Socket?
  }

  func runIOLoop() {
    serveWorkers()
    state.withLock {
      $0.ioThreadEnded()
    }
    ActivePools.unregister(self)
    ioThreadExited()
  }

  /// A worker's read buffer and reply ring, boxed so they are read in place (no copy-on-write,
  /// no dictionary round trip per read).
  private final class ReadBuffer {
    let worker: Int
    var frames = FrameBuffer()
    var ring: ReplyRing.Reader?
    /// It broke the protocol: it is being killed, and nothing more it sent is read.
    var broken = false
    /// The last read found the socket empty (`EAGAIN`).
    var empty = false
    init(worker: Int, ring: ReplyRing?) {
      self.worker = worker
      self.ring = ring.map { ReplyRing.Reader($0) }
    }
  }

  /// The loop proper; its locals (sockets among them) are released when it returns.
  private func serveWorkers() {
    // By worker id: found in constant time, whatever the number of workers.
    var buffers: [Int: ReadBuffer] = [:]
    var errorStreams: [WorkerErrorStream] = []
    var streamsPolled: [WorkerErrorStream] = []
    var pollSet: [pollfd] = []
    var watched: [Watched] = []
    var nextDeadline: MonotonicInstant?
    guard let wake = state.withLock({ $0.wakeChannel?.read }) else { return }
    while true {
      spawnPendingWorkers()
      watched.removeAll(keepingCapacity: true)
      let stopped = state.withLock { state -> Bool in
        for worker in state.workers where worker.phase != .exited {
          watched.append(
            Watched(
              worker: worker.id, socket: worker.socket, pid: worker.pid, signalTarget: worker.signalTarget,
              wantsWrite: worker.wantsWrite, ring: worker.ring, pidfd: worker.pidfd,
              standardError: worker.standardError))
        }
        return state.lifecycle == .stopped && state.workers.isEmpty
      }
      if stopped { break }
      pollSet.removeAll(keepingCapacity: true)
      pollSet.append(pollfd(fd: wake.fd, events: Int16(POLLIN), revents: 0))
      for entry in watched {
        let events = Int16(POLLIN) | (entry.wantsWrite ? Int16(POLLOUT) : 0)
        pollSet.append(pollfd(fd: entry.socket.fd, events: events, revents: 0))
      }
      // Then the workers' stderr pipes still open, in `streamsPolled` order. A stream is made
      // when its worker is first seen (workers are appended, so new ones are at the end).
      for entry in watched.reversed() {
        guard let pipe = entry.standardError else { continue }
        if errorStreams.contains(where: { $0.worker == entry.worker }) { break }
        errorStreams.append(
          WorkerErrorStream(
            worker: entry.worker, pid: entry.pid, socket: pipe, forward: configuration.workerStandardError == .forward))
      }
      streamsPolled.removeAll(keepingCapacity: true)
      for stream in errorStreams where !stream.closed { streamsPolled.append(stream) }
      for stream in streamsPolled { pollSet.append(pollfd(fd: stream.socket.fd, events: Int16(POLLIN), revents: 0)) }
      // Then the processes themselves: a worker's exit, not the end of its socket (which a
      // task's forked child may hold open), says that it is gone.
      for entry in watched {
        pollSet.append(pollfd(fd: entry.pidfd?.fd ?? -1, events: Int16(POLLIN), revents: 0))
      }
      // Replies a worker published while this thread was busy are taken without sleeping; one
      // published after the flag is up makes the worker send a `wake` frame.
      var timeout = Self.milliseconds(until: nextDeadline)
      for entry in watched { entry.ring?.setParentSleeping(true) }
      pp_fence()
      if buffers.values.contains(where: { $0.ring?.hasFrames == true }) { timeout = 0 }
      _ = try? pollSet.withUnsafeMutableBufferPointer { fds in
        try Syscall.poll(fds.baseAddress!, fds.count, timeoutMilliseconds: timeout)
      }
      for entry in watched { entry.ring?.setParentSleeping(false) }
      if pollSet[0].revents != 0 { drainWakeChannel(wake.fd) }
      // Stderr first: a dying worker's last words are read before its death is handled.
      for (offset, stream) in streamsPolled.enumerated() where pollSet[1 + watched.count + offset].revents != 0 {
        stream.read()
      }
      for (offset, entry) in watched.enumerated() {
        let revents = pollSet[offset + 1].revents
        let exited = pollSet[1 + watched.count + streamsPolled.count + offset].revents != 0
        if revents & Int16(POLLOUT) != 0 && !exited { resumeWriting(worker: entry.worker) }
        let readable = revents & (Int16(POLLIN) | Int16(POLLHUP) | Int16(POLLERR)) != 0
        guard readable || exited || entry.ring != nil else { continue }
        let buffer: ReadBuffer
        if let known = buffers[entry.worker] {
          buffer = known
        } else {
          buffer = ReadBuffer(worker: entry.worker, ring: entry.ring)
          buffers[entry.worker] = buffer
        }
        var open = read(entry, into: buffer, readable: readable || exited)
        if exited {
          // Everything the worker wrote before it died is in the socket now: take it all (a
          // bounded number of reads: a forked descendant may still be writing), then reap.
          var reads = 0
          while open && !buffer.empty && reads < 1024 {
            open = read(entry, into: buffer, readable: true)
            reads += 1
          }
          open = false
        }
        if !open {
          buffers[entry.worker] = nil
          let stream = errorStreams.first { $0.worker == entry.worker }
          errorStreams.removeAll { $0.worker == entry.worker }
          reap(entry, exited: exited, errorStream: stream)
        }
      }
      nextDeadline = transition { state, effects in state.checkDeadlines(now: .now, &effects) }
    }
  }

  /// Reads what the socket has (when `readable`) and handles it together with what the reply
  /// ring holds; false at end of stream. The ring is read to its end first, so the replies of a
  /// worker that died are all taken before its death is.
  private func read(_ entry: Watched, into buffer: ReadBuffer, readable: Bool) -> Bool {
    var open = true
    buffer.empty = false
    if readable {
      do {
        open = try buffer.frames.fill(from: entry.socket.fd)
      } catch  where error.code == EAGAIN || error.code == EWOULDBLOCK {
        buffer.empty = true
      } catch {
        open = false
      }
    }
    // The jobs the results make room for are written once, after every frame of this read:
    // one write for the lot instead of one per job.
    guard !buffer.broken else { return open }
    var flushes: [Int] = []
    do {
      try drain(buffer, from: entry, flushes: &flushes)
    } catch {
      buffer.broken = true
      transition { state, effects in state.protocolViolation(worker: entry.worker, "\(error)", now: .now, &effects) }
    }
    for worker in flushes { flush(worker: worker) }
    return open
  }

  /// Handles the socket's frames and the ring's in the order the worker wrote them: a results
  /// frame on the socket (too big for the ring) waits until the ring's `resultsOnSocket` frame
  /// that announces it has been read.
  private func drain(_ buffer: ReadBuffer, from entry: Watched, flushes: inout [Int]) throws {
    let ringed = buffer.ring != nil
    while true {
      var progressed = false
      // Results on the socket are taken only as far as the ring announced them.
      var announced = buffer.ring?.expectedOnSocket ?? 0
      let holdBack = { (kind: Frame.Kind, id: UInt64) -> Bool in
        guard ringed && kind == .results && id != 0 else { return false }
        if announced == 0 { return true }
        announced -= 1
        return false
      }
      try buffer.frames.drainFrames(stoppingBefore: holdBack) { kind, id, payload in
        if ringed && kind == .results && id != 0 { buffer.ring!.expectedOnSocket -= 1 }
        try handle(kind, id: id, payload, from: entry, flushes: &flushes)
        progressed = true
      }
      while let ring = buffer.ring, ring.expectedOnSocket == 0 {
        // Every result the ring holds, up to an announcement of one on the socket, is taken
        // under one lock with one dispatch pass.
        var results: [(id: UInt64, payload: UnsafeRawBufferPointer)] = []
        var announced = false
        while let (header, bytes) = try buffer.ring!.next() {
          if header.kind == .resultsOnSocket {
            announced = true
            break
          }
          guard header.kind == .results else {
            throw WireError("a frame of kind \(header.kind.rawValue) in the reply ring")
          }
          results.append((header.id, UnsafeRawBufferPointer(rebasing: bytes[header.payload])))
        }
        if results.isEmpty && !announced { break }
        deliver(results, from: entry, flushes: &flushes)
        buffer.ring!.release()
        if announced { buffer.ring!.expectedOnSocket += 1 }
        progressed = true
      }
      if !progressed { return }
    }
  }

  /// Hands a batch of results to the state under one lock and one dispatch pass, then to
  /// their futures. A result the worker was not running stops the batch (the worker is being
  /// killed for it).
  private func deliver(
    _ results: [(id: UInt64, payload: UnsafeRawBufferPointer)], from entry: Watched, flushes: inout [Int]
  ) {
    guard !results.isEmpty else { return }
    let now = MonotonicInstant.now
    let deliveries = transition(deferringFlushesTo: &flushes) { state, effects in
      var deliveries: [(Job, Int32)] = []
      deliveries.reserveCapacity(results.count)
      for result in results {
        guard let delivery = state.resultArrived(worker: entry.worker, requestID: result.id, now: now, &effects) else {
          break
        }
        deliveries.append(delivery)
      }
      state.advance(&effects)
      return deliveries
    }
    for (index, (job, pid)) in deliveries.enumerated() { job.sink.deliver(results[index].payload, workerPID: pid) }
  }

  private func handle(
    _ kind: Frame.Kind, id: UInt64, _ payload: UnsafeRawBufferPointer, from entry: Watched, flushes: inout [Int]
  ) throws {
    switch kind {
    case .results where id == 0:
      // The initializer's outcome.
      let failure = try initializerFailure(in: payload)
      transition { state, effects in state.initialized(worker: entry.worker, failure: failure, now: .now, &effects) }
    case .results:
      deliver([(id, payload)], from: entry, flushes: &flushes)
    case .hello:
      var reader = PayloadReader(payload)
      let version = try reader.integer(UInt32.self)
      let pid = try reader.integer(Int32.self)
      transition { state, effects in state.hello(worker: entry.worker, version: version, pid: pid, now: .now, &effects)
      }
    case .wake:
      break  // The ring is read on every pass.
    case .run, .stop, .initialize, .resultsOnSocket:
      throw WireError("the worker sent a \(kind == .resultsOnSocket ? "ring" : "parent's") frame on its socket")
    }
  }

  private func resumeWriting(worker id: Int) {
    let claimed = state.withLock { $0.claimWriting(worker: id) }
    if claimed { flush(worker: id) }
  }

  /// The worker exited, or its socket ended: make sure the process is gone, collect its
  /// status, hand it to the state with the tail of its stderr for the errors its death causes.
  private func reap(_ entry: Watched, exited: Bool, errorStream: WorkerErrorStream?) {
    let phase = state.withLock { $0.workerEnded(worker: entry.worker) }
    let graceful = phase == .retiring
    // A worker closes its socket only by exiting, unless it misbehaves: make sure it is dead
    // before blocking in waitpid. (Not reaped yet, so the pid cannot have been reused; for a
    // launcher, the rest of its process group goes too.)
    if !graceful || (exited && entry.signalTarget < 0) { Syscall.kill(entry.signalTarget, SIGKILL) }
    var termination: ProcessPoolError.Termination?
    do {
      // Known to have exited: no blocking wait (with SIGCHLD ignored, a blocking waitpid would
      // wait for every other child too).
      var status = exited ? try ForkServer.waitPID(entry.pid, noHang: true) : nil
      if status == nil { status = try ForkServer.waitPID(entry.pid, noHang: false) }
      if let status { termination = Self.termination(fromWaitStatus: status) }
    } catch {
      // ECHILD: SIGCHLD is ignored here, so the system reaped the worker and kept no status.
      termination = nil
    }
    // Reaped: everything it wrote is in the pipe now.
    let report = errorStream?.finish()
    transition { state, effects in
      let failuresBefore = effects.failures.count
      let logsBefore = effects.logs.count
      state.workerExited(
        worker: entry.worker, phase: phase ?? .exited, termination: termination, now: .now, &effects)
      if let report {
        Self.attach(report, of: entry.pid, to: &effects, failuresFrom: failuresBefore, logsFrom: logsBefore)
      }
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

  private func drainWakeChannel(_ fd: Int32) {
    var scratch = [UInt8](repeating: 0, count: 256)
    while Glibc.read(fd, &scratch, scratch.count) > 0 {}
  }

  private static func milliseconds(until deadline: MonotonicInstant?) -> Int32 {
    guard let deadline else { return -1 }
    let remaining = MonotonicInstant.now.duration(to: deadline)
    if remaining <= .zero { return 0 }
    let (seconds, attoseconds) = remaining.components
    let total = seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1
    return Int32(clamping: total)
  }
}
