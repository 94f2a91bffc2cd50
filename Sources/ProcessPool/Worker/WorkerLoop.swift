import CProcessPoolShims
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// The worker side of the socket. The calling thread reads frames, runs each job on itself and
/// hands over its results (into the reply ring a local worker shares with its parent, else on
/// the socket): no hand-off between threads on the way. A spawned or launched worker starts a
/// watchdog thread that sleeps until the parent's end of the socket closes and then ends the
/// process, so a parent that dies while a task runs leaves no orphan; a forked worker gets that
/// from its parent-death signal (see `ForkServer`).
final class WorkerLoop: @unchecked Sendable {
  /// Set once this process has entered the worker loop; a process started as a worker that did
  /// not get here must not start workers itself (that recursion is a fork bomb).
  static let isActive = Atomic<Bool>(false)

  /// Frames from the parent: the socket, or stdin's pipe for a worker started by a launcher.
  private let input: Int32
  /// Frames to the parent: the same socket, or stdout's pipe.
  private let output: Int32
  /// Replies not yet written. Only the loop's thread touches it, or the job it waits for.
  /// (No runtime exclusivity checks: one thread at a time, and a job holds it across awaits.)
  @exclusivity(unchecked) private var out: [UInt8] = []
  /// A large `[UInt8]` output that ends the results frame in `out`, kept apart from it so that
  /// it is copied once, into shared memory (see `runChunk`); empty for most replies.
  @exclusivity(unchecked) private var outTail: [UInt8] = []
  /// The last task value decoded, reused while the parent keeps sending the same bytes
  /// (every item of a `map` carries the same task).
  /// (Three properties, not an optional tuple: copying a tuple of these types looks up its type
  /// metadata by mangled name, a demangling in every new worker's second job.)
  @exclusivity(unchecked) private var cachedTask: (any ProcessTask)?
  @exclusivity(unchecked) private var cachedTaskName: [UInt8] = []
  @exclusivity(unchecked) private var cachedTaskBytes: [UInt8] = []
  /// Where the loop waits for a job that suspended and goes on elsewhere.
  private let gate = JobGate()
  /// Where results go for a local worker: memory shared with the parent (see `ReplyRing`).
  /// Only the loop's thread touches it, or the job it waits for.
  @exclusivity(unchecked) private var ring: ReplyRing.Writer?

  init(input: Int32, output: Int32) {
    self.input = input
    self.output = output
    let ringFD = pp_take_ring_fd()
    if ringFD >= 0 {
      // The parent reads results from the ring only: without it this worker cannot work (it
      // ends before its hello, which the pool reports as a worker that failed to start).
      guard let mapped = try? ReplyRing.map(ringFD) else { _exit(PP_EXIT_NO_RING) }
      ring = ReplyRing.Writer(mapped)
      Syscall.close(ringFD)
    }
  }

  /// Runs until the parent says stop (exit 0) or goes away (immediate exit). Never returns.
  func run() -> Never {
    Self.isActive.store(true, ordering: .releasing)
    // fd 3 came without close-on-exec (dup2 clears it); a program the task starts must not
    // inherit it, or the parent would not see end of stream when this worker dies.
    try? Syscall.setCloseOnExec(input)
    try? Syscall.setCloseOnExec(output)
    out.reserveCapacity(1 << 12)
    let start = Frame.begin(.hello, id: 0, into: &out)
    out.appendLittleEndian(Frame.protocolVersion)
    out.appendLittleEndian(Int32(getpid()))
    Frame.finish(at: start, in: &out)
    flush()
    // A forked worker dies with its fork server, which dies with the parent: the parent's
    // death needs no thread here (the pool closes a worker's socket only once it has reaped it).
    if pp_forked_by_server() == 0 {
      let (input, output) = (self.input, self.output)
      do {
        try OSThread.start(name: "pp-worker-hup") { Self.watchForHangUp(input, output) }
      } catch {
        _exit(PP_EXIT_NO_THREAD)
      }
    }
    var buffer = FrameBuffer()
    while true {
      do {
        try buffer.drainBatch { frames, bytes in
          var index = 0
          while index < frames.count {
            switch frames[index].kind {
            case .run:
              // The jobs that arrived together run in one task (a task per job cost more than a
              // tiny job); each reply still goes out as soon as its job ends.
              var end = index + 1
              while end < frames.count && frames[end].kind == .run { end += 1 }
              runJobs(frames[index..<end], in: bytes)
              index = end
            case .runShared:
              runShared(frames[index], in: bytes)
              index += 1
            case .initialize:
              handleInitialize(id: frames[index].id, UnsafeRawBufferPointer(rebasing: bytes[frames[index].payload]))
              flush()
              index += 1
            case .stop:
              flush()
              Self.exitStopped()
            default: _exit(PP_EXIT_UNEXPECTED_FRAME)  // a parent speaking another protocol
            }
          }
        }
      } catch {
        _exit(PP_EXIT_READ_FAILED)
      }
      let open: Bool
      do {
        open = try read(into: &buffer)
      } catch {
        open = false
      }
      if !open {
        // The parent is gone (a graceful stop ends the process before the socket closes).
        fflush(nil)
        _exit(0)
      }
    }
  }

  /// Whether `input` is a socket (a local worker's; a launched one reads a pipe).
  @exclusivity(unchecked) private var inputIsSocket = true

  /// Reads what the parent sent, waiting for it if there is nothing yet; false at end of
  /// stream. An empty socket is waited on with `poll`, not in `read`: a reader blocked in `read`
  /// on a Unix socket is also woken each time the parent reads a frame this worker sent (the
  /// room it frees wakes every waiter of the socket), and that wake-up takes the processor from
  /// the parent just as it handles the frame (a `wake`, or a result on the socket), twice per
  /// round trip for nothing. `poll` for input is woken by input (or a hang-up) only.
  private func read(into buffer: inout FrameBuffer) throws(Errno) -> Bool {
    if inputIsSocket {
      do {
        return try buffer.fill(from: input, waiting: false)
      } catch  where error.code == EAGAIN || error.code == EWOULDBLOCK {
        var entry = pollfd(fd: input, events: Int16(POLLIN), revents: 0)
        _ = try? Syscall.poll(&entry, 1, timeoutMilliseconds: -1)
      } catch  where error.code == ENOTSOCK {
        inputIsSocket = false
      }
    }
    return try buffer.fill(from: input)
  }

  /// The watchdog: `POLLRDHUP` alone is not woken by data, only by the parent's end closing.
  private static func watchForHangUp(_ input: Int32, _ output: Int32) {
    // POLLRDHUP (Linux) is only declared with _GNU_SOURCE. A socket reports it when the parent
    // goes; a launcher's pipes report POLLHUP (stdin, no writer left) or POLLERR (stdout, no
    // reader left) without asking.
    let readHangUp: Int16 = 0x2000
    let gone = readHangUp | Int16(POLLHUP | POLLERR | POLLNVAL)
    var entries = [pollfd(fd: input, events: readHangUp, revents: 0)]
    if output != input { entries.append(pollfd(fd: output, events: 0, revents: 0)) }
    while true {
      let ready = (try? Syscall.poll(&entries, entries.count, timeoutMilliseconds: -1)) ?? 0
      if ready > 0 && entries.contains(where: { $0.revents & gone != 0 }) {
        fflush(nil)
        _exit(0)
      }
    }
  }

  // MARK: Running

  /// Runs `run` frames one after the other in one task. Each reply is handed over before the
  /// next job starts: a reply held back would be lost, and its job blamed, if the next one
  /// crashed.
  private func runJobs(_ frames: ArraySlice<Frame.Header>, in bytes: UnsafeRawBufferPointer) {
    let batch = RunBatch(frames: frames, bytes: bytes)
    runToCompletion { [self] in
      for frame in batch.frames {
        await runJob(id: frame.id, UnsafeRawBufferPointer(rebasing: batch.bytes[frame.payload]))
        handOverReply()
      }
    }
  }

  /// Runs the job of a `runShared` frame, whose payload is in the region toward this worker.
  /// The payload is released before the reply goes: by the time the parent has the result, it
  /// can place the next input at the same offset, in pages already in memory.
  private func runShared(_ frame: Frame.Header, in bytes: UnsafeRawBufferPointer) {
    // The parent's own frame: a place outside the region is a broken parent, as any malformed frame.
    guard let values = ring?.ring.values,
      let (span, payload) = try? values.value(at: UnsafeRawBufferPointer(rebasing: bytes[frame.payload]), .toWorker)
    else { _exit(PP_EXIT_READ_FAILED) }
    let batch = RunBatch(frames: [frame], bytes: payload)
    runToCompletion { [self] in
      await runJob(id: batch.frames.first!.id, batch.bytes)
      values.release(span, .toWorker)
      handOverReply()
    }
  }

  /// Puts the results frame in `out` into the reply ring (no system call; the parent is woken
  /// only if it sleeps), or on the socket when there is no ring or it is too big for it.
  private func handOverReply() {
    guard var writer = ring, !out.isEmpty else { return flush() }
    let shared = writer.ring
    let wake = { [self] in if shared.parentNeedsWaking() { sendWake() } }
    // A reply with a tail (only with the regions) goes there whole.
    let published = outTail.isEmpty && out.withUnsafeBytes { writer.publish($0, wake: wake) }
    if published {
      out.removeAll(keepingCapacity: true)
    } else if let values = shared.values {
      // Too big for the ring: the payload goes into the region toward the parent (waiting for
      // room as the ring does), and the ring says where.
      let id = out.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 5, as: UInt64.self)) }
      let span = out.withUnsafeBytes { frame in
        Self.waitingForRoom(wake: wake) {
          values.place(UnsafeRawBufferPointer(rebasing: frame[Frame.headerSize...]), then: outTail, .toParent)
        }
      }
      outTail = []
      SharedValues.frame(.resultsShared, id: id, span).withUnsafeBytes { _ = writer.publish($0, wake: wake) }
      // Kept up to what a region keeps: the next large reply is encoded into pages already in
      // memory, not into a fresh buffer faulted in page by page.
      out.removeAll(keepingCapacity: out.capacity <= SharedValues.kept)
    } else {
      Self.resultsOnSocketFrame.withUnsafeBytes { writer.publishMarker($0, wake: wake) }
      flush()
    }
    ring = writer
    wake()
  }

  /// Retries `attempt` until it finds room: 20 µs at first, doubling up to 1 ms (`wake` rings the
  /// parent if it sleeps), as the reply ring's writer does.
  private static func waitingForRoom<T>(wake: () -> Void, _ attempt: () -> T?) -> T {
    var pause = 20_000
    while true {
      if let done = attempt() { return done }
      wake()
      Syscall.sleep(nanoseconds: pause)
      pause = min(pause * 2, 1_000_000)
    }
  }

  /// The largest frame this worker sends: through shared memory when it has the regions, else
  /// on its socket.
  private var messageLimit: Int {
    ring?.ring.values != nil ? SharedValues.limit.load(ordering: .relaxed) : Frame.sendLimit.load(ordering: .relaxed)
  }

  private static let wakeFrame = Frame.bare(.wake)
  private static let resultsOnSocketFrame = Frame.bare(.resultsOnSocket)

  /// Tells a sleeping parent that replies wait in the ring.
  private func sendWake() {
    Self.wakeFrame.withUnsafeBytes { send($0) }
  }

  private func runJob(id: UInt64, _ payload: UnsafeRawBufferPointer) async {
    let start = Frame.begin(.results, id: id, into: &out)
    do {
      var reader = PayloadReader(payload)
      let name = try reader.block()
      let taskBytes = try reader.block()
      let count = Int(try reader.integer(UInt32.self))
      let inputs = UnsafeRawBufferPointer(rebasing: payload[reader.offset...])
      // Every block must be whole before anything runs (a malformed frame ends the worker).
      var check = PayloadReader(inputs)
      for _ in 0..<count { _ = try check.block() }
      switch resolveTask(name: name, bytes: taskBytes) {
      case .success(let task):
        await task.runChunk(
          InputBlocks(bytes: inputs, count: count), into: &out, tail: &outTail,
          apartFrom: ring?.ring.values != nil ? SharedValues.threshold : .max, frameStart: start, limit: messageLimit)
      case .failure(let error):
        ResultsPayload.appendOutcomeCount(count, to: &out)
        for _ in 0..<count { ResultsPayload.appendFailureOutcome(error, to: &out) }
      }
      refuseOversizedResults(from: start, count: count)
    } catch {
      _exit(PP_EXIT_REPLY_FAILED)
    }
    Frame.finish(at: start, in: &out, trailing: outTail.count)
  }

  /// A results frame past `messageLimit` (a chunk whose outputs fit one by one but not
  /// together) is replaced by a `valueTooLarge` failure for each of its `count` inputs: the
  /// parent gets an error it can name, not a frame it must call a protocol violation.
  private func refuseOversizedResults(from start: Int, count: Int) {
    let limit = messageLimit
    let size = out.count - start + outTail.count
    guard size > limit else { return }
    out.removeSubrange((start + Frame.headerSize)...)
    outTail = []
    ResultsPayload.appendOutcomeCount(count, to: &out)
    let error = ProcessPoolError(
      .valueTooLarge,
      "the outputs of a chunk of \(count) take \(size) bytes together, more than the limit of \(limit) bytes "
        + "of one message (use a smaller chunksize)")
    for _ in 0..<count { ResultsPayload.appendFailureOutcome(error, to: &out) }
  }

  private func handleInitialize(id: UInt64, _ payload: UnsafeRawBufferPointer) {
    let start = Frame.begin(.results, id: id, into: &out)
    ResultsPayload.appendOutcomeCount(1, to: &out)
    var failed = false
    do {
      var reader = PayloadReader(payload)
      let name = try reader.string()
      let bytes = try reader.block()
      guard let type = TaskTypeRegistry.initializer(named: name) else {
        throw ProcessPoolError(.unknownTaskType, "the initializer type cannot be found in the worker")
      }
      let initializer = try type.decodeInitializer(bytes)
      let outcome = Mutex<SendableError?>(nil)
      runToCompletion {
        do {
          try await initializer.initialize()
        } catch {
          outcome.withLock { $0 = SendableError(error) }
        }
      }
      if let error = outcome.withLock({ $0 }) { throw error.error }
      ResultsPayload.appendEmptySuccessOutcome(to: &out)
    } catch {
      failed = true
      ResultsPayload.appendFailureOutcome(error, to: &out)
    }
    Frame.finish(at: start, in: &out)
    // A worker whose initializer failed takes no work; the parent breaks the pool.
    if failed {
      flush()
      exit(PP_EXIT_INITIALIZER_FAILED)
    }
  }

  private func resolveTask(name: UnsafeRawBufferPointer, bytes: UnsafeRawBufferPointer) -> Result<
    any ProcessTask, any Error
  > {
    if let cachedTask, Self.same(cachedTaskName, name), Self.same(cachedTaskBytes, bytes) {
      return .success(cachedTask)
    }
    guard
      let type = Self.preparedTask(named: name) ?? TaskTypeRegistry.task(named: String(decoding: name, as: UTF8.self))
    else {
      return .failure(ProcessPoolError(.unknownTaskType, "the task type cannot be found in the worker"))
    }
    do {
      let task = try type.decodeTask(bytes)
      cachedTask = task
      cachedTaskName = [UInt8](copying: name)
      cachedTaskBytes = [UInt8](copying: bytes)
      return .success(task)
    } catch {
      return .failure(ProcessPoolError(.decodingFailed, "cannot decode the task value in the worker: \(error)"))
    }
  }

  /// Byte equality by `memcmp` (the generic `elementsEqual` goes byte by byte).
  static func same(_ stored: [UInt8], _ bytes: UnsafeRawBufferPointer) -> Bool {
    guard stored.count == bytes.count else { return false }
    if stored.isEmpty { return true }
    return stored.withUnsafeBytes { memcmp($0.baseAddress!, bytes.baseAddress!, bytes.count) == 0 }
  }

  /// Writes the pending replies in one go.
  private func flush() {
    guard !out.isEmpty else { return }
    out.withUnsafeBytes { send($0) }
    // Keeps up to 4 MiB (as the read buffer does), so echoing large payloads does not map and
    // fault in a fresh buffer per job.
    out.removeAll(keepingCapacity: out.capacity <= 1 << 22)
  }

  /// Writes `bytes` to the parent, blocking as needed.
  private func send(_ bytes: UnsafeRawBufferPointer) {
    do {
      try Syscall.sendAll(output, bytes)
    } catch {
      // The parent is gone: nobody wants the result.
      fflush(nil)
      _exit(0)
    }
  }

  /// Runs async work to its end. It starts on this thread and, as long as it does not suspend,
  /// finishes here too: no thread hop for a synchronous job. One that suspends goes on in the
  /// cooperative pool while this thread waits.
  private func runToCompletion(_ body: sending @escaping () async -> Void) {
    let ticket = gate.next()
    let gate = self.gate
    #if compiler(>=6.2)
      Task.immediate {
        await body()
        gate.finish(ticket)
      }
    #else
      Task {
        await body()
        gate.finish(ticket)
      }
    #endif
    gate.wait(for: ticket)
  }
}

/// The loop's thread waits here for the job it started; tickets make one gate serve every job.
private final class JobGate: @unchecked Sendable {
  private let lock = ConditionLock()
  /// Guarded by `lock`.
  private var finished: UInt64 = 0
  /// Only the loop's thread touches it.
  private var issued: UInt64 = 0

  func next() -> UInt64 {
    issued += 1
    return issued
  }

  func finish(_ ticket: UInt64) {
    lock.withLock {
      finished = ticket
      lock.broadcast()
    }
  }

  func wait(for ticket: UInt64) {
    lock.withLock { _ = lock.wait(until: nil) { finished >= ticket } }
  }
}

/// `run` frames that arrived together, as views into the read buffer (which stays put until
/// they are done).
private struct RunBatch: @unchecked Sendable {
  let frames: ArraySlice<Frame.Header>
  let bytes: UnsafeRawBufferPointer
}

/// The inputs of a `run` frame: `count` blocks `[u32 length][bytes]`, already checked to be
/// whole. A view into the read buffer, which stays put until the job is done.
struct InputBlocks: @unchecked Sendable {
  let bytes: UnsafeRawBufferPointer
  let count: Int
}

/// Carries an error out of a `Task` (errors are not all `Sendable`).
private struct SendableError: @unchecked Sendable {
  let error: any Error
  init(_ error: any Error) { self.error = error }
}

extension WorkerInitializer {
  static func decodeInitializer(_ bytes: UnsafeRawBufferPointer) throws -> any WorkerInitializer {
    try BinaryDecoder.decode(Self.self, from: bytes)
  }
}
