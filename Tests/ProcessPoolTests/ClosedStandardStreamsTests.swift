import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// Issue 19, item 10: a program started with descriptors 0, 1 and 2 closed (a daemon) runs a
/// pool: the pool's descriptors never take 0–2 and its log lines never raise SIGPIPE. Both run
/// inside a worker, a fresh process, so the test runner's own descriptors are not disturbed.
extension WorkerProcessTests {
  @Suite struct ClosedStandardStreamsTests {
    @Test func aPoolInAProcessWithoutStandardStreamsSurvivesACrash() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let findings = try await pool.submit(NestedPoolWithoutStandardStreams(), 7).value
        #expect(findings.crash == ProcessPoolError.Code.workerCrashed.rawValue)
        #expect(findings.square == 49)
        // Sockets, pipes (workers' stderr), the ring's memfd and pidfds are the pool's; libdispatch
        // may take 0-2 for its own epoll, eventfd and timerfd.
        let pools = findings.standardStreams.filter {
          $0.contains("socket:") || $0.contains("pipe:") || $0.contains("processpool") || $0.contains("pidfd")
        }
        #expect(pools == [], "all of 0-2: \(findings.standardStreams)")
        // Its worker has 0 and 1 closed too (as a spawned process would), and its stderr pipe on
        // 2: in particular not the working directory that the fork server is handed, nor any
        // other descriptor of the pool.
        let inherited = findings.workerStandardStreams.filter {
          $0.contains("-> /") || $0.contains("processpool") || $0.contains("socket:")
            || ($0.contains("pipe:") && !$0.hasPrefix("2 "))
        }
        #expect(inherited == [], "the worker's 0-2: \(findings.workerStandardStreams)")
      }
    }

    @Test func everyDescriptorThePoolCreatesIsAboveTheStandardStreams() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let numbers = try await pool.submit(DescriptorsWithoutStandardStreams(), 0).value
        #expect(!numbers.isEmpty)
        for (name, fd) in numbers { #expect(fd > 2, "\(name) took \(fd)") }
      }
    }

    @Test func aLogLineIntoAPipeNobodyReadsDoesNotRaiseSIGPIPE() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        #expect(try await pool.submit(LogIntoBrokenPipe(), 1).value == Int(EPIPE))
      }
    }
  }
}

/// Closes its stdin, stdout and stderr as a daemon would, runs a nested pool through a crash
/// (whose report is logged to fd 2) and another task, and reports what descriptors 0–2 are then.
struct NestedPoolWithoutStandardStreams: ProcessTask {
  struct Findings: Codable, Sendable {
    var crash: String
    var square: Int
    /// `fd -> target` for each of 0, 1, 2 that is open while the nested pool runs.
    var standardStreams: [String]
    /// The same in the nested pool's worker.
    var workerStandardStreams: [String]
  }

  func run(_ x: Int) async throws -> Findings {
    for fd: Int32 in 0...2 { close(fd) }
    let pool = try ProcessPoolExecutor(maxWorkers: 1)
    var crash = "none"
    do {
      _ = try await pool.submit(Crash(), .exit).value
    } catch let error as ProcessPoolError {
      crash = error.code.rawValue
    }
    let square = try await pool.submit(Square(), x).value
    let open = (0...2).compactMap { fd in Self.target(of: fd).map { "\(fd) -> \($0)" } }
    let workerOpen = try await pool.submit(StandardStreamTargets(), 0).value
    await pool.shutdown()
    return Findings(crash: crash, square: square, standardStreams: open, workerStandardStreams: workerOpen)
  }

  static func target(of fd: Int) -> String? {
    var buffer = [CChar](repeating: 0, count: 256)
    let count = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count - 1)
    guard count > 0 else { return nil }
    return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }
}

/// `fd -> target` for each of 0, 1, 2 that is open in the worker.
struct StandardStreamTargets: ProcessTask {
  func run(_: Int) async throws -> [String] {
    (0...2).compactMap { fd in NestedPoolWithoutStandardStreams.target(of: fd).map { "\(fd) -> \($0)" } }
  }
}

/// Closes stdin, stdout and stderr, then creates each kind of descriptor the pool makes (a
/// socket pair, a pipe for a worker's stderr, a memfd, a pidfd) right after checking that a
/// slot below 3 is free for it (libdispatch may take them back), and reports their numbers.
struct DescriptorsWithoutStandardStreams: ProcessTask {
  func run(_: Int) async throws -> [String: Int32] {
    for fd: Int32 in 0...2 { close(fd) }
    var numbers: [String: Int32] = [:]
    func lowSlotIsFree() -> Bool {
      let probe = open("/dev/null", O_RDONLY | O_CLOEXEC)
      close(probe)
      return probe >= 0 && probe < 3
    }
    if lowSlotIsFree() {
      let (a, b) = try Syscall.socketPair()
      numbers["socket pair"] = min(a, b)
      close(a)
      close(b)
    }
    if lowSlotIsFree() {
      let (read, write) = try Syscall.outputPipe()
      numbers["stderr pipe"] = min(read, write)
      close(read)
      close(write)
    }
    if lowSlotIsFree() {
      let memfd = try Syscall.sharedMemory(size: 4096)
      numbers["memfd"] = memfd
      close(memfd)
    }
    if lowSlotIsFree() {
      let pidfd = try Syscall.pidfdOpen(getpid())
      numbers["pidfd"] = pidfd
      close(pidfd)
    }
    return numbers
  }
}

/// Points stderr at a pipe whose read end is closed and logs a line (with SIGPIPE at its default,
/// as in every worker); returns the errno the write left, having survived.
struct LogIntoBrokenPipe: ProcessTask {
  func run(_: Int) async throws -> Int {
    var ends: [Int32] = [-1, -1]
    guard pipe(&ends) == 0 else { return -1 }
    close(ends[0])
    dup2(ends[1], 2)
    close(ends[1])
    errno = 0
    ProcessPoolLog.emit(.warning, "a line nobody reads")
    return Int(errno)
  }
}
