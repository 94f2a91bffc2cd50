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
        // The pool's descriptors are sockets and its reply rings' memfds; libdispatch may
        // legitimately put its own (an epoll, an eventfd) on the free slots.
        let pools = findings.standardStreams.filter { $0.contains("socket:") || $0.contains("processpool") }
        #expect(pools == [], "all of 0-2: \(findings.standardStreams)")
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
    await pool.shutdown()
    return Findings(crash: crash, square: square, standardStreams: open)
  }

  static func target(of fd: Int) -> String? {
    var buffer = [CChar](repeating: 0, count: 256)
    let count = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count - 1)
    guard count > 0 else { return nil }
    return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
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
