import CProcessPoolShims

#if canImport(Glibc)
  import Glibc
#endif

/// The I/O thread: one epoll set over every worker's descriptors and the wake-up pipe. It reads
/// frames, writes what a caller could not, reaps workers that exited, and enforces deadlines. A
/// pass touches the workers that have events and the reply rings of the busy ones, never every
/// worker. It exits once the pool is stopped.
extension PoolCore {
  func runIOLoop(_ poller: EventPoller, wake: Int32) {
    serveWorkers(poller, wake: wake)
    // Every worker was reaped and its channel closed with it.
    let leftover = channels.withLock { channels in
      defer { channels = [:] }
      return Array(channels.values)
    }
    assert(leftover.isEmpty, "worker channels left open when the I/O thread ends")
    for channel in leftover { channel.close() }
    ForkServer.unwatch(poller)
    poller.close()
    closeWakeChannel()
    state.withLock {
      $0.ioThreadEnded()
    }
    ActivePools.unregister(self)
    ioThreadExited()
  }

  /// What the I/O thread knows of one worker: its channel, what was read of its socket and
  /// ring, and whether its ring is looked at on every pass.
  private final class Reader {
    let channel: WorkerChannel
    var frames = FrameBuffer()
    var ring: ReplyRing.Reader?
    /// It broke the protocol: it is being killed, and nothing more it sent is read.
    var broken = false
    /// The last read found the socket empty (`EAGAIN`).
    var empty = false
    /// Its ring is read on every pass (it is busy); otherwise its ring asks for a `wake` frame
    /// when it publishes, and is read when that comes.
    var hot = false
    /// When its ring last gave frames (or it became hot).
    var lastFrames = MonotonicInstant(sinceOrigin: .zero)
    /// The ring gave frames in this pass.
    var tookFrames = false
    /// Results the ring gave in this pass.
    var resultsTaken = 0
    /// Jobs its worker had left after the last results were delivered.
    var jobsLeft = 0
    /// This pass's events.
    var readable = false
    var writable = false
    var exited = false
    var touched = false
    /// Read in this pass because of an event.
    var served = false
    /// Reaped: its channel is closed.
    var gone = false
    /// Its socket ended before its process did: it is reaped at its exit (its pidfd's event).
    var socketEnded = false
    init(_ channel: WorkerChannel) {
      self.channel = channel
      ring = channel.ring.map { ReplyRing.Reader($0) }
    }
  }

  /// A hot ring that gave nothing for this long goes back to waking the I/O thread. Looking at
  /// a ring costs a cache line; a `wake` costs the worker a system call and this thread a
  /// read, so a worker that is busy but waits its turn for a core (hundreds of workers on a
  /// few cores) stays hot.
  private static let quietBeforeWaking = Duration.milliseconds(10)

  /// The loop proper; its locals are released when it returns.
  private func serveWorkers(_ poller: EventPoller, wake: Int32) {
    // By worker id: found in constant time, whatever the number of workers.
    var readers: [Int: Reader] = [:]
    var hot: [Reader] = []
    var touched: [Reader] = []
    var events = [pp_epoll_event](repeating: pp_epoll_event(), count: 256)
    var nextDeadline: MonotonicInstant?
    var deadlinesDue = true
    var spin = ReplySpin()
    // The last pass delivered single results, each leaving its worker with nothing to do: round
    // trips one at a time, where the next reply comes as soon as the caller asks, and looking
    // for it pays. A pipeline (several results, or jobs still queued at the worker) keeps this
    // thread awake anyway and needs the processors for the workers' jobs.
    var oneAtATime = false
    // Forks and reaps asked of the fork server: this thread goes on while it works.
    var spawns = SpawnsInFlight()
    var reaps: [PendingReap] = []
    while true {
      for channel in spawnPendingWorkers(poller, pending: &spawns) { readers[channel.worker] = Reader(channel) }
      let stopped = state.withLock { $0.lifecycle == .stopped && $0.workers.isEmpty }
      if stopped && spawns.isEmpty && reaps.isEmpty { break }
      // Replies a busy worker published while this thread was awake are taken without
      // sleeping; one published after the flag is up makes the worker send a `wake` frame.
      var timeout = Self.milliseconds(until: nextDeadline)
      // A busy worker's reply may be microseconds away: looking for it a little is cheaper than
      // sleeping and being woken for it.
      // Not while the fork server works for this pool: its answer is what comes next.
      if timeout != 0 && oneAtATime && spawns.forks.isEmpty && reaps.isEmpty
        && spin.look(until: { hot.contains { $0.ring?.hasFrames == true } })
      {
        timeout = 0
      }
      for reader in hot { reader.ring?.ring.setParentSleeping(true) }
      pp_fence()
      if hot.contains(where: { $0.ring?.hasFrames == true }) { timeout = 0 }
      let count = events.withUnsafeMutableBufferPointer { poller.wait(into: $0, timeoutMilliseconds: timeout) }
      for reader in hot { reader.ring?.ring.setParentSleeping(false) }
      touched.removeAll(keepingCapacity: true)
      var serverAnswered = false
      // Stderr first: a dying worker's last words are read before its death is handled.
      for event in events[0..<count] {
        let (source, worker) = EventPoller.decode(event.data)
        if source == .wake {
          drainWakeChannel(wake)
          deadlinesDue = true
          continue
        }
        if worker == 0 {
          serverAnswered = true
          continue
        }
        guard let reader = readers[worker] else { continue }
        switch source {
        case .standardError:
          if let stream = reader.channel.errorStream {
            stream.read()
            // At its end a pipe stays readable: it is no longer watched.
            if stream.closed { poller.remove(stream.fd) }
          }
          continue
        case .socket:
          reader.readable = event.events & UInt32(EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0
          reader.writable = event.events & EventPoller.writable != 0
        case .process:
          reader.exited = true
        case .wake:
          continue
        }
        if !reader.touched {
          reader.touched = true
          touched.append(reader)
        }
      }
      for reader in touched {
        reader.touched = false
        defer {
          reader.readable = false
          reader.writable = false
          reader.exited = false
        }
        if reader.writable && !reader.exited { reader.channel.resumeWriting() }
        guard reader.readable || reader.exited else { continue }
        // It has something to say: its ring is read on every pass until it goes quiet.
        if !reader.hot, reader.ring != nil {
          reader.hot = true
          reader.lastFrames = .now
          reader.ring?.ring.setParentSleeping(false)
          hot.append(reader)
        }
        serve(reader, readers: &readers, poller, reaps: &reaps)
      }
      if serverAnswered { ForkServer.collect(by: ObjectIdentifier(self)) }
      if !reaps.isEmpty { finishReaps(&reaps) }
      for reader in hot where !reader.served {
        // No event: its ring alone.
        _ = read(reader, readable: false)
      }
      // Quiet rings go back to waking this thread; one that got a frame meanwhile stays.
      let now = MonotonicInstant.now
      var mostTaken = 0
      var jobsLeft = false
      var index = 0
      while index < hot.count {
        let reader = hot[index]
        if reader.gone {
          hot.swapAt(index, hot.count - 1)
          hot.removeLast()
          continue
        }
        if reader.tookFrames { reader.lastFrames = now }
        reader.tookFrames = false
        mostTaken = max(mostTaken, reader.resultsTaken)
        if reader.resultsTaken > 0 && reader.jobsLeft > 0 { jobsLeft = true }
        reader.resultsTaken = 0
        reader.served = false
        if reader.lastFrames.duration(to: now) >= Self.quietBeforeWaking, let ring = reader.ring {
          ring.ring.setParentSleeping(true)
          pp_fence()
          if !ring.hasFrames {
            reader.hot = false
            hot.swapAt(index, hot.count - 1)
            hot.removeLast()
            continue
          }
          ring.ring.setParentSleeping(false)
          reader.lastFrames = now
        }
        index += 1
      }
      oneAtATime = mostTaken == 1 && !jobsLeft
      if deadlinesDue || nextDeadline.map({ $0 <= .now }) == true {
        deadlinesDue = false
        nextDeadline = transition { state, effects in state.checkDeadlines(now: .now, &effects) }
      }
    }
  }

  /// Reads a worker that has events: its socket and ring, all of it once it exited, then reaps
  /// it at its end.
  private func serve(_ reader: Reader, readers: inout [Int: Reader], _ poller: EventPoller, reaps: inout [PendingReap])
  {
    reader.served = true
    var open = read(reader, readable: true)
    if reader.exited {
      // Everything the worker wrote before it died is in the socket now: take it all (a
      // bounded number of reads: a forked descendant may still be writing), then reap.
      var reads = 0
      while open && !reader.empty && reads < 1024 {
        open = read(reader, readable: true)
        reads += 1
      }
      open = false
    }
    guard !open else { return }
    if !reader.exited, reader.channel.pidfd != nil, !reader.channel.launched {
      // Its exit follows (a worker closes its socket by exiting): reaped then, without waiting
      // for it here. Its socket, at its end, is watched no more.
      if !reader.socketEnded {
        reader.socketEnded = true
        poller.remove(reader.channel.socket)
        // Unless it is retiring, it is killed, as `reap` would.
        let worker = reader.channel.worker
        let retiring = state.withLock { state in
          guard let index = state.index(ofWorker: worker), case .retiring = state.workers[index].phase else {
            return false
          }
          return true
        }
        if !retiring { Syscall.kill(reader.channel.pid, SIGKILL) }
      }
      return
    }
    reader.gone = true
    readers[reader.channel.worker] = nil
    reap(reader.channel, exited: reader.exited, poller, reaps: &reaps)
  }

  /// Reads what the socket has (when `readable`) and handles it together with what the reply
  /// ring holds; false at end of stream. The ring is read to its end first, so the replies of a
  /// worker that died are all taken before its death is.
  private func read(_ reader: Reader, readable: Bool) -> Bool {
    var open = true
    reader.empty = false
    if readable {
      do {
        open = try reader.frames.fill(from: reader.channel.socket)
      } catch  where error.code == EAGAIN || error.code == EWOULDBLOCK {
        reader.empty = true
      } catch {
        open = false
      }
    }
    // The jobs the results make room for are written once, after every frame of this read:
    // one write for the lot instead of one per job.
    guard !reader.broken else { return open }
    var flushes: [WorkerChannel] = []
    do {
      try drain(reader, flushes: &flushes)
    } catch {
      reader.broken = true
      let worker = reader.channel.worker
      transition { state, effects in state.protocolViolation(worker: worker, "\(error)", now: .now, &effects) }
    }
    for channel in flushes { channel.flush() }
    return open
  }

  /// Handles the socket's frames and the ring's in the order the worker wrote them: a results
  /// frame on the socket (too big for the ring) waits until the ring's `resultsOnSocket` frame
  /// that announces it has been read.
  private func drain(_ buffer: Reader, flushes: inout [WorkerChannel]) throws {
    let worker = buffer.channel.worker
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
        try handle(kind, id: id, payload, from: worker, flushes: &flushes)
        progressed = true
      }
      while let ring = buffer.ring, ring.expectedOnSocket == 0 {
        // Every result the ring holds, up to an announcement of one on the socket, is taken
        // under one lock with one dispatch pass.
        var results: [(id: UInt64, payload: UnsafeRawBufferPointer)] = []
        var shared: [SharedValues.Span] = []
        var announced = false
        while let (header, bytes) = try buffer.ring!.next() {
          if header.kind == .resultsOnSocket {
            announced = true
            break
          }
          let payload = UnsafeRawBufferPointer(rebasing: bytes[header.payload])
          if header.kind == .resultsShared, let values = ring.ring.values {
            let (span, value) = try values.value(at: payload, .toParent)
            shared.append(span)
            results.append((header.id, value))
            continue
          }
          guard header.kind == .results else {
            throw WireError("a frame of kind \(header.kind.rawValue) in the reply ring")
          }
          results.append((header.id, payload))
        }
        if results.isEmpty && !announced { break }
        buffer.jobsLeft = deliver(results, from: worker, flushes: &flushes)
        for span in shared { ring.ring.values?.release(span, .toParent) }
        buffer.ring!.release()
        buffer.tookFrames = true
        buffer.resultsTaken += results.count
        if announced { buffer.ring!.expectedOnSocket += 1 }
        progressed = true
      }
      if !progressed { return }
    }
  }

  /// Hands a batch of results to the state under one lock and one dispatch pass, then to
  /// their futures. A result the worker was not running stops the batch (the worker is being
  /// killed for it). Returns the jobs the worker has left.
  @discardableResult
  private func deliver(
    _ results: [(id: UInt64, payload: UnsafeRawBufferPointer)], from worker: Int, flushes: inout [WorkerChannel]
  ) -> Int {
    guard !results.isEmpty else { return 0 }
    let now = MonotonicInstant.now
    let (deliveries, jobsLeft) = transition(deferringFlushesTo: &flushes) { state, effects in
      var deliveries: [(Job, Int32)] = []
      deliveries.reserveCapacity(results.count)
      for result in results {
        guard let delivery = state.resultArrived(worker: worker, requestID: result.id, now: now, &effects) else {
          break
        }
        deliveries.append(delivery)
      }
      state.advance(&effects)
      return (deliveries, state.index(ofWorker: worker).map { state.workers[$0].inflight.count } ?? 0)
    }
    // A map's chunks last first: its consumer, waiting for the first of them (in input order),
    // is resumed once the rest are in too and takes them without suspending again. Other futures
    // complete first, in the order their worker finished them.
    let chunk = ObjectIdentifier(MapChunkSink.self)
    var chunks = 0
    for (index, (job, pid)) in deliveries.enumerated() {
      if ObjectIdentifier(type(of: job.sink)) == chunk {
        chunks += 1
      } else {
        job.sink.deliver(results[index].payload, workerPID: pid)
      }
    }
    // Usually all of them are chunks: then no second look at their type.
    let mixed = chunks < deliveries.count
    for index in deliveries.indices.reversed() where chunks > 0 {
      let (job, pid) = deliveries[index]
      if mixed && ObjectIdentifier(type(of: job.sink)) != chunk { continue }
      job.sink.deliver(results[index].payload, workerPID: pid)
      chunks -= 1
    }
    return jobsLeft
  }

  private func handle(
    _ kind: Frame.Kind, id: UInt64, _ payload: UnsafeRawBufferPointer, from worker: Int,
    flushes: inout [WorkerChannel]
  ) throws {
    switch kind {
    case .results where id == 0:
      // The initializer's outcome.
      let failure = try ResultsPayload.initializerFailure(in: payload)
      transition { state, effects in state.initialized(worker: worker, failure: failure, now: .now, &effects) }
    case .results:
      deliver([(id, payload)], from: worker, flushes: &flushes)
    case .hello:
      var reader = PayloadReader(payload)
      let version = try reader.integer(UInt32.self)
      let pid = try reader.integer(Int32.self)
      transition { state, effects in state.hello(worker: worker, version: version, pid: pid, now: .now, &effects)
      }
    case .wake:
      break  // The ring is read with every event of its worker.
    case .run, .stop, .initialize, .resultsOnSocket, .runShared, .resultsShared:
      let source = kind == .resultsOnSocket || kind == .resultsShared ? "ring" : "parent's"
      throw WireError("the worker sent a \(source) frame on its socket")
    }
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
