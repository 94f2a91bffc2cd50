import Synchronization

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// Connects to a `TestGate` and returns the connection (the test learns the task got there).
func connectToGate(_ path: String) throws -> Int32 {
  let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
  guard fd >= 0 else { throw GateError(message: "socket failed") }
  var address = sockaddr_un()
  address.sun_family = sa_family_t(AF_UNIX)
  withUnsafeMutableBytes(of: &address.sun_path) { raw in
    for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
  }
  let connected = withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
      connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
    }
  }
  guard connected == 0 else {
    close(fd)
    throw GateError(message: "cannot connect to \(path)")
  }
  return fd
}

/// Ignores SIGTERM, arrives at the gate, and returns its input once the gate opens.
struct IgnoreTermAtGate: ProcessTask {
  var path: String
  func run(_ x: Int) async throws -> Int {
    signal(SIGTERM, SIG_IGN)
    return try await WaitForGate(path: path).run(x)
  }
}

/// Forks a child that holds the worker's socket (and the gate connection) until the gate
/// opens, then ends as `mode` says: `exit` exits the worker with code 7, `value` returns 5.
struct ForkAndHoldSocket: ProcessTask {
  enum Mode: String, Codable, Sendable { case exit, value }
  var path: String
  func run(_ mode: Mode) async throws -> Int {
    let fd = try connectToGate(path)
    let child = fork()
    if child == 0 {
      // Only system calls in the forked child of a threaded process.
      var byte: UInt8 = 0
      while read(fd, &byte, 1) < 0 && errno == EINTR {}
      _exit(0)
    }
    close(fd)
    guard child > 0 else { throw GateError(message: "fork failed") }
    if mode == .exit { exit(7) }
    return 5
  }
}

/// Writes `marker` to a file when it runs (a side effect the test can look for).
struct LeaveMark: ProcessTask {
  var path: String
  func run(_ x: Int) async throws -> Int {
    let fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o600)
    guard fd >= 0 else { throw GateError(message: "cannot open \(path)") }
    var line = Array("\(x)\n".utf8)
    _ = write(fd, &line, line.count)
    close(fd)
    return x
  }
}

/// The lines `LeaveMark` wrote to `path`.
func marks(_ path: String) -> [String] {
  guard let file = fopen(path, "r") else { return [] }
  defer { fclose(file) }
  var lines: [String] = []
  var buffer = [CChar](repeating: 0, count: 256)
  while fgets(&buffer, 256, file) != nil {
    let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    lines.append(String(line.dropLast()))
  }
  return lines
}

/// Starts a nested pool, submits a `LeaveMark`, and exits the worker at once without shutting
/// the nested pool down: the exit hook must still let that work finish.
struct SubmitAndExit: ProcessTask {
  var path: String
  func run(_ x: Int) async throws -> Int {
    let pool = try ProcessPoolExecutor(maxWorkers: 1)
    _ = try pool.submit(LeaveMark(path: path), x)
    NestedPools.keep(pool)
    exit(0)
  }
}

/// An initializer that makes its worker exit.
struct ExitingInitializer: WorkerInitializer {
  func initialize() async throws { exit(3) }
}

/// An initializer that takes a while.
struct SlowInitializer: WorkerInitializer {
  var milliseconds: Int
  func initialize() async throws { usleep(UInt32(milliseconds) * 1000) }
}

/// Writes a forged "initializer failed" frame to the worker's socket, then waits to be killed.
struct ForgeInitializerFailure: ProcessTask {
  func run(_: Int) async throws -> Int {
    var frame: [UInt8] = []
    let start = Frame.begin(.results, id: 0, into: &frame)
    frame.appendLittleEndian(UInt32(1))
    frame.appendLittleEndian(Frame.Status.failure.rawValue)
    frame.appendBlock(Array("forged".utf8))
    Frame.finish(at: start, in: &frame)
    _ = frame.withUnsafeBytes { write(3, $0.baseAddress, $0.count) }
    usleep(600_000_000)
    return 0
  }
}

/// In a worker: lowers its own descriptor limit so that only a few workers fit, runs a nested
/// pool of 8 over 24 items, and returns how many results came back.
struct MapNearTheDescriptorLimit: ProcessTask {
  func run(_: Int) async throws -> Int {
    var open = 0
    if let dir = opendir("/proc/self/fd") {
      while readdir(dir) != nil { open += 1 }
      closedir(dir)
    }
    // Room for the nested pool's wake channel, a few workers (three descriptors each) and the
    // descriptors the pool leaves to the rest of the process, not for eight workers.
    let room = rlim_t(open + WorkerSpawner.reservedDescriptors + 14)
    var limit = rlimit(rlim_cur: room, rlim_max: room)
    guard setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else {
      throw GateError(message: "setrlimit failed")
    }
    var configuration = ProcessPoolExecutor.Configuration()
    configuration.maxWorkers = 8
    let pool = try ProcessPoolExecutor(configuration: configuration)
    var count = 0
    for try await _ in try pool.map(Square(), 0..<24, chunksize: 1) { count += 1 }
    let started = pool.statistics.workersStarted
    await pool.shutdown()
    guard started < 8 else { throw GateError(message: "the limit let all 8 workers start") }
    return count
  }
}

/// In a worker: ignores SIGCHLD, crashes a task of a nested pool and returns the error's text.
struct CrashWithSIGCHLDIgnored: ProcessTask {
  /// `spawned` 1: the nested pool's workers are spawned (its backtracer setting differs from the
  /// fork server's), so they are this process's children; 0: forked by its fork server.
  func run(_ spawned: Int) async throws -> String {
    signal(SIGCHLD, SIG_IGN)
    var configuration = ProcessPoolExecutor.Configuration()
    configuration.maxWorkers = 2
    if spawned == 1 {
      // This worker's own environment has the backtracer off, which would be the user's setting.
      unsetenv("SWIFT_BACKTRACE")
      configuration.workerBacktraces = true
    }
    let pool = try ProcessPoolExecutor(configuration: configuration)
    defer { pool.shutdownAndWaitFromTask() }
    do {
      _ = try await pool.submit(Crash(), .exit).value
      return "no error"
    } catch let error as ProcessPoolError {
      return "\(error.code) \(error.termination.map { "\($0)" } ?? "nil"): \(error.message)"
    }
  }
}

extension ProcessPoolExecutor {
  /// `shutdownAndWait` from inside a task's synchronous cleanup.
  fileprivate func shutdownAndWaitFromTask() {
    core.transition { state, effects in state.shutdown(cancelFutures: false, now: .now, &effects) }
    core.blockUntilStopped()
  }
}

/// A result object the test can watch being freed (CPython's `make_dummy_object`).
final class DummyObject: Codable, Sendable {
  let value: Int
  init(value: Int) { self.value = value }
}

struct MakeDummyObject: ProcessTask {
  func run(_ x: Int) async throws -> DummyObject { DummyObject(value: x) }
}

struct Absolute: ProcessTask {
  func run(_ x: Int) async throws -> Int { abs(x) }
}
