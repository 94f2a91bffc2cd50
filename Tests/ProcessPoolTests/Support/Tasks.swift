import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

// Tasks the integration tests run in real worker processes. They are internal types of the test
// target: the worker (this test binary, started again) finds them by name.

struct Square: ProcessTask {
  func run(_ x: Int) async throws -> Int { x * x }
}

struct Multiply: ProcessTask {
  var factor: Int
  func run(_ x: Int) async throws -> Int { x * factor }
}

/// Field names that collide with `submit`'s own parameters reach the task (test_submit_keyword).
struct Capture: ProcessTask {
  struct Arguments: Codable, Sendable, Equatable {
    var fn: Int
    var `self`: Int
  }
  func run(_ input: Arguments) async throws -> Arguments { input }
}

struct ProcessID: ProcessTask {
  func run(_: Int) async throws -> Int32 { getpid() }
}

struct Echo: ProcessTask {
  func run(_ bytes: [UInt8]) async throws -> [UInt8] { bytes }
}

/// A `Codable` error: it comes back as itself.
struct DivisionByZero: Error, Codable, Equatable {
  var dividend: Int
}

struct Divide: ProcessTask {
  var divisor: Int
  func run(_ x: Int) async throws -> Int {
    if divisor == 0 { throw DivisionByZero(dividend: x) }
    return x / divisor
  }
}

/// A non-`Codable` error: it comes back as a remote error with its type name and description.
struct OpaqueFailure: Error, CustomStringConvertible {
  var description: String { "this is an exception" }
}

/// An error whose description is empty still propagates (gh-132063).
struct SilentFailure: Error, CustomStringConvertible {
  var description: String { "" }
}

struct Fail: ProcessTask {
  var silent = false
  func run(_: Int) async throws -> Int {
    if silent { throw SilentFailure() }
    throw OpaqueFailure()
  }
}

/// Connects to a `TestGate` (so the test knows it started), blocks until the gate opens, then
/// returns its input.
struct WaitForGate: ProcessTask {
  var path: String
  func run(_ x: Int) async throws -> Int {
    let fd = try connectToGate(path)
    defer { close(fd) }
    var byte: UInt8 = 0
    while read(fd, &byte, 1) < 0 && errno == EINTR {}
    return x
  }
}

struct GateError: Error, Codable {
  var message: String
}

/// Sleeps: for timeouts and cancellation of running work, where the point is that it does not end.
struct Sleep: ProcessTask {
  func run(_ milliseconds: Int) async throws -> Int {
    usleep(UInt32(milliseconds) * 1000)
    return milliseconds
  }
}

/// Dies the way it is told to.
struct Crash: ProcessTask {
  enum Mode: String, Codable, Sendable {
    case exit, trap, segfault, abort
  }
  func run(_ mode: Mode) async throws -> Int {
    switch mode {
    case .exit: exit(99)
    case .trap: fatalError("crash on purpose")
    case .segfault: UnsafeMutablePointer<Int>(bitPattern: 8)!.pointee = 1
    case .abort: abort()
    }
    return 0
  }
}

/// Returns its input, except that it crashes the worker on `at`.
struct CrashAt: ProcessTask {
  let at: Int
  func run(_ x: Int) async throws -> Int {
    if x == at { exit(99) }
    return x
  }
}

/// `size` bytes that tell where they came from: `size` and each byte's index mixed.
struct MakeBytes: ProcessTask {
  func run(_ size: Int) async throws -> [UInt8] { Self.expected(size) }

  static func expected(_ size: Int) -> [UInt8] {
    (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ size) }
  }
}

/// An output that cannot be encoded.
struct Unencodable: Codable, Sendable {
  init() {}
  init(from decoder: any Decoder) throws { self.init() }
  func encode(to encoder: any Encoder) throws {
    throw EncodingError.invalidValue(0, .init(codingPath: [], debugDescription: "refuses to encode"))
  }
}

struct ReturnUnencodable: ProcessTask {
  func run(_: Int) async throws -> Unencodable { Unencodable() }
}

struct TakeUnencodable: ProcessTask {
  func run(_: Unencodable) async throws -> Int { 0 }
}

/// An input that refuses to encode when negative.
struct NonNegative: Codable, Sendable {
  var value: Int
  init(_ value: Int) { self.value = value }
  init(from decoder: any Decoder) throws { value = try decoder.singleValueContainer().decode(Int.self) }
  func encode(to encoder: any Encoder) throws {
    guard value >= 0 else {
      throw EncodingError.invalidValue(value, .init(codingPath: [], debugDescription: "refuses to encode"))
    }
    var container = encoder.singleValueContainer()
    try container.encode(value)
  }
}

struct DoubleNonNegative: ProcessTask {
  func run(_ input: NonNegative) async throws -> Int { input.value * 2 }
}

/// Starts a pool of its own inside the worker, gives it a task that never ends, keeps it
/// alive in a global, and returns the inner worker's pid (a grandchild of the test).
struct StartNestedSleeper: ProcessTask {
  func run(_: Int) async throws -> Int32 {
    let pool = try ProcessPoolExecutor(maxWorkers: 1)
    // The one worker's pid, from the worker itself (it is spawned by the pool's I/O thread).
    let pid = try await pool.submit(ProcessID(), 0).value
    _ = try pool.submit(Sleep(), 3_600_000)
    NestedPools.keep(pool)
    return pid
  }
}

/// Nested pools that must outlive the task that made them.
enum NestedPools {
  nonisolated(unsafe) static var pools: [ProcessPoolExecutor] = []
  static func keep(_ pool: ProcessPoolExecutor) { pools.append(pool) }
}

/// Runs a nested pool inside the worker and returns its result (nested pools are legitimate).
struct NestedSquare: ProcessTask {
  func run(_ x: Int) async throws -> Int {
    let pool = try ProcessPoolExecutor(maxWorkers: 1)
    let value = try await pool.submit(Square(), x).value
    await pool.shutdown()
    return value
  }
}

/// Sets worker-global state once; tasks read it.
struct SetGreeting: WorkerInitializer {
  var greeting: String
  func initialize() async throws { Greeting.value = greeting }
}

struct FailingInitializer: WorkerInitializer {
  func initialize() async throws { throw GateError(message: "error in initializer") }
}

enum Greeting {
  nonisolated(unsafe) static var value = "not initialized"
}

struct ReadGreeting: ProcessTask {
  func run(_: Int) async throws -> String { Greeting.value }
}

struct Pair: Codable, Sendable, Equatable {
  var a: Int
  var b: Int
}

/// divmod(a, b); b == 0 throws `DivisionByZero`.
struct DivMod: ProcessTask {
  func run(_ pair: Pair) async throws -> Pair {
    if pair.b == 0 { throw DivisionByZero(dividend: pair.a) }
    return Pair(a: pair.a / pair.b, b: pair.a % pair.b)
  }
}

/// The task's own timeout error, which a map must not take for its own.
struct TaskTimeoutError: Error, Codable, Equatable {}

struct TimeoutOnOne: ProcessTask {
  func run(_ x: Int) async throws -> Int {
    if x == 1 { throw TaskTimeoutError() }
    return x
  }
}

struct Describe: ProcessTask {
  func run(_ x: Int) async throws -> String { String(x) }
}

/// An infinite input that counts how many elements were pulled.
struct CountingSequence: Sequence, IteratorProtocol {
  let pulled: PulledCounter
  var current = 0
  mutating func next() -> Int? {
    defer { current += 1 }
    pulled.increment()
    return current
  }
}

final class PulledCounter: @unchecked Sendable {
  private(set) var value = 0
  func increment() { value += 1 }
}

/// Writes bytes that are not a frame onto the worker's socket (fd 3), as a misbehaving task might.
struct WriteGarbage: ProcessTask {
  func run(_ count: Int) async throws -> Int {
    let garbage = [UInt8](repeating: 0xEE, count: count)
    _ = garbage.withUnsafeBytes { write(3, $0.baseAddress, $0.count) }
    usleep(600_000_000)
    return 0
  }
}

/// Decodes in a worker but not in the parent: the parent's decoding of the result fails.
struct ParentRefusesToDecode: Codable, Sendable {
  init() {}
  init(from decoder: any Decoder) throws {
    if !ProcessPoolWorker.isWorkerProcess { throw GateError(message: "refusing to decode in the parent") }
  }
  func encode(to encoder: any Encoder) throws {}
}

struct ReturnParentRefusesToDecode: ProcessTask {
  func run(_: Int) async throws -> ParentRefusesToDecode { ParentRefusesToDecode() }
}

/// Decodes in the parent but not in the worker: the worker's decoding of the input fails.
struct WorkerRefusesToDecode: Codable, Sendable {
  init() {}
  init(from decoder: any Decoder) throws {
    if ProcessPoolWorker.isWorkerProcess { throw GateError(message: "refusing to decode in the worker") }
  }
  func encode(to encoder: any Encoder) throws {}
}

struct TakeWorkerRefusesToDecode: ProcessTask {
  func run(_: WorkerRefusesToDecode) async throws -> Int { 1 }
}

/// Dies half-way through writing a result: a frame header promising more bytes than follow.
struct DieWhileWritingResult: ProcessTask {
  func run(_ id: Int) async throws -> Int {
    var frame: [UInt8] = [0xE8, 0x03, 0, 0, 3]  // length 1000, kind "results"
    frame += [UInt8](repeating: 0, count: 8 + 10)
    _ = frame.withUnsafeBytes { write(3, $0.baseAddress, $0.count) }
    _exit(7)
  }
}

/// Whether the worker's socket (fd 3) is close-on-exec, so programs a task starts do not hold it.
struct SocketIsCloseOnExec: ProcessTask {
  func run(_: Int) async throws -> Bool { fcntl(3, F_GETFD) & FD_CLOEXEC != 0 }
}

/// Prints to standard output: in a worker started by a launcher that is where frames go, so the
/// worker must have moved its stdout out of the way.
struct PrintToStandardOutput: ProcessTask {
  func run(_ x: Int) async throws -> Int {
    print("noise from a task that prints \(x)")
    fflush(nil)
    return x
  }
}

/// Returns its input; the one equal to `at` first waits at the gate at `path`.
struct HoldAt: ProcessTask {
  var path: String
  var at: Int
  func run(_ x: Int) async throws -> Int {
    if x == at { return try await WaitForGate(path: path).run(x) }
    return x
  }
}

/// Takes nothing and returns nothing, and fails on demand: `ProcessVoid` both ways.
struct NoInputNoOutput: ProcessTask {
  var fail = false
  func run(_: ProcessVoid) async throws -> ProcessVoid {
    if fail { throw GateError(message: "asked to fail") }
    return ProcessVoid()
  }
}

/// Returns nothing for an Int.
struct Discard: ProcessTask {
  func run(_: Int) async throws -> ProcessVoid { ProcessVoid() }
}

/// Dies with `fatalError("bad row \(x)")`.
struct FailRow: ProcessTask {
  func run(_ row: Int) async throws -> Int { fatalError("bad row \(row)") }
}

/// Writes `text` to its stderr (no newline added) and returns its length.
struct WriteToStandardError: ProcessTask {
  func run(_ text: String) async throws -> Int {
    var bytes = Array(text.utf8)
    return bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
  }
}

/// The worker's `SWIFT_BACKTRACE` variable.
struct ReadBacktraceSetting: ProcessTask {
  func run(_: Int) async throws -> String? { getenv("SWIFT_BACKTRACE").map { String(cString: $0) } }
}
