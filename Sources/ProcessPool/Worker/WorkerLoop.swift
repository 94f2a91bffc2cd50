import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// The worker side of the socket: a reader thread that turns bytes into frames and notices the
/// parent's death, and the calling thread, which runs one frame at a time and writes the results.
final class WorkerLoop: @unchecked Sendable {
  /// Set once this process has entered the worker loop; a process started as a worker that did
  /// not get here must not start workers itself (that recursion is a fork bomb).
  static let isActive = Atomic<Bool>(false)

  /// Frames from the parent: the socket, or stdin's pipe for a worker started by a launcher.
  private let input: Int32
  /// Frames to the parent: the same socket, or stdout's.
  private let output: Int32
  private let inbox = ConditionLock()
  /// Guarded by `inbox`.
  private var frames: [(Frame.Kind, UInt64, [UInt8])] = []
  private var frameHead = 0
  /// The last task value decoded, reused while the parent keeps sending the same bytes
  /// (every item of a `map` carries the same task).
  private var cachedTask: (name: String, bytes: [UInt8], task: any ProcessTask)?

  init(input: Int32, output: Int32) {
    self.input = input
    self.output = output
  }

  /// Runs until the parent says stop (exit 0) or goes away (immediate exit). Never returns.
  func run() -> Never {
    Self.isActive.store(true, ordering: .releasing)
    // fd 3 came without close-on-exec (dup2 clears it); a program the task starts must not
    // inherit it, or the parent would not see end of stream when this worker dies.
    try? Syscall.setCloseOnExec(input)
    try? Syscall.setCloseOnExec(output)
    var hello: [UInt8] = []
    let start = Frame.begin(.hello, id: 0, into: &hello)
    hello.appendLittleEndian(Frame.protocolVersion)
    hello.appendLittleEndian(Int32(getpid()))
    Frame.finish(at: start, in: &hello)
    send(hello)
    do {
      try OSThread.start(name: "pp-worker-read") { self.readLoop() }
    } catch {
      _exit(70)
    }
    while true {
      let (kind, id, payload) = nextFrame()
      switch kind {
      case .run: handleRun(id: id, payload)
      case .initialize: handleInitialize(id: id, payload)
      case .stop: exit(0)
      default: _exit(71)  // a parent speaking another protocol
      }
    }
  }

  // MARK: Reading

  private func readLoop() {
    var buffer = FrameBuffer()
    while true {
      let open: Bool
      do {
        open = try buffer.fill(from: input)
      } catch {
        open = false
      }
      if !open {
        // The parent is gone (a graceful stop ends the process before the socket closes), so
        // stop at once whatever runs: no orphans.
        fflush(nil)
        _exit(0)
      }
      do {
        try buffer.drainFrames { kind, id, payload in
          let bytes = [UInt8](copying: payload)
          inbox.withLock {
            frames.append((kind, id, bytes))
            inbox.broadcast()
          }
        }
      } catch {
        _exit(72)
      }
    }
  }

  private func nextFrame() -> (Frame.Kind, UInt64, [UInt8]) {
    inbox.withLock {
      _ = inbox.wait(until: nil) { frameHead < frames.count }
      let frame = frames[frameHead]
      frameHead += 1
      if frameHead == frames.count {
        frames.removeAll(keepingCapacity: true)
        frameHead = 0
      }
      return frame
    }
  }

  // MARK: Running

  private func handleRun(id: UInt64, _ payload: [UInt8]) {
    var reply: [UInt8] = []
    let start = Frame.begin(.results, id: id, into: &reply)
    do {
      let request = try payload.withUnsafeBytes { try RunRequest($0) }
      let inputs = request.inputs
      switch resolveTask(name: request.name, bytes: request.task) {
      case .success(let task):
        reply = Self.runBlocking { [reply] in
          var reply = reply
          await task.runChunk(inputs, into: &reply)
          return reply
        }
      case .failure(let error):
        reply.appendLittleEndian(UInt32(inputs.count))
        for _ in inputs { appendFailureOutcome(error, to: &reply) }
      }
    } catch {
      _exit(73)
    }
    Frame.finish(at: start, in: &reply)
    send(reply)
  }

  private func handleInitialize(id: UInt64, _ payload: [UInt8]) {
    var reply: [UInt8] = []
    let start = Frame.begin(.results, id: id, into: &reply)
    reply.appendLittleEndian(UInt32(1))
    var failed = false
    do {
      let request = try payload.withUnsafeBytes { try InitializeRequest($0) }
      let bytes = request.value
      guard let type = TaskTypeRegistry.initializer(named: request.name) else {
        throw ProcessPoolError(.unknownTaskType, "the initializer type cannot be found in the worker")
      }
      let initializer = try bytes.withUnsafeBytes { try type.decodeInitializer($0) }
      let error: (any Error)? = Self.runBlocking { () async -> SendableError? in
        do {
          try await initializer.initialize()
          return nil
        } catch {
          return SendableError(error)
        }
      }.map { $0.error }
      if let error { throw error }
      reply.append(Frame.Status.success.rawValue)
      reply.appendLittleEndian(UInt32(0))
    } catch {
      failed = true
      appendFailureOutcome(error, to: &reply)
    }
    Frame.finish(at: start, in: &reply)
    send(reply)
    // A worker whose initializer failed takes no work; the parent breaks the pool.
    if failed { exit(3) }
  }

  private func resolveTask(name: String, bytes: [UInt8]) -> Result<any ProcessTask, any Error> {
    if let cachedTask, cachedTask.name == name, cachedTask.bytes == bytes { return .success(cachedTask.task) }
    guard let type = TaskTypeRegistry.task(named: name) else {
      return .failure(ProcessPoolError(.unknownTaskType, "the task type cannot be found in the worker"))
    }
    do {
      let task = try bytes.withUnsafeBytes { try type.decodeTask($0) }
      cachedTask = (name, bytes, task)
      return .success(task)
    } catch {
      return .failure(ProcessPoolError(.decodingFailed, "cannot decode the task value in the worker: \(error)"))
    }
  }

  private func send(_ bytes: [UInt8]) {
    do {
      try bytes.withUnsafeBytes { raw in try Syscall.sendAll(output, raw) }
    } catch {
      // The parent is gone: nobody wants the result.
      fflush(nil)
      _exit(0)
    }
  }

  /// Runs async work from this (non-cooperative) thread and waits for it.
  private static func runBlocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let gate = ConditionLock()
    let box = Mutex<T?>(nil)
    Task {
      let value = await body()
      gate.withLock {
        box.withLock { $0 = value }
        gate.broadcast()
      }
    }
    return gate.withLock {
      _ = gate.wait(until: nil) { box.withLock { $0 != nil } }
      return box.withLock { $0! }
    }
  }
}

/// A `run` frame's payload: the task's type name and value, and the inputs.
private struct RunRequest {
  var name: String
  var task: [UInt8]
  var inputs: [[UInt8]] = []

  init(_ raw: UnsafeRawBufferPointer) throws {
    var reader = PayloadReader(raw)
    name = try reader.string()
    task = [UInt8](copying: try reader.block())
    let count = Int(try reader.integer(UInt32.self))
    inputs.reserveCapacity(min(count, raw.count / 4))
    for _ in 0..<count { inputs.append([UInt8](copying: try reader.block())) }
  }
}

/// An `initialize` frame's payload: the initializer's type name and value.
private struct InitializeRequest {
  var name: String
  var value: [UInt8]

  init(_ raw: UnsafeRawBufferPointer) throws {
    var reader = PayloadReader(raw)
    name = try reader.string()
    value = [UInt8](copying: try reader.block())
  }
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
