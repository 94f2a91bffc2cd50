import CProcessPoolShims
import Synchronization
import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// Workers' stderr: forwarded line by line with the pid in front, captured, or inherited; the
/// tail of a dead worker's stderr on its error; the backtracer off unless asked for.
extension WorkerProcessTests {
  @Suite struct CrashReportTests {
    init() {
      ProcessPoolLog.setHandler { _, _ in }
    }

    static func configuration(_ mode: ProcessPoolExecutor.WorkerStandardError, workers: Int = 1)
      -> ProcessPoolExecutor.Configuration
    {
      var configuration = ProcessPoolExecutor.Configuration.workers(workers)
      configuration.workerStandardError = mode
      return configuration
    }

    /// Runs `body` with forwarded lines going to a pipe instead of this process's stderr, and
    /// returns what was forwarded (read once `body` has shut its pool down).
    static func capturingForwardedLines(_ body: () async throws -> Void) async throws -> String {
      var fds: [Int32] = [-1, -1]
      #expect(pp_pipe_cloexec(&fds) == 0)
      _ = fcntl(fds[0], F_SETFL, O_NONBLOCK)
      defer {
        close(fds[0])
        close(fds[1])
      }
      WorkerErrorStream.destination.store(fds[1], ordering: .relaxed)
      defer { WorkerErrorStream.destination.store(2, ordering: .relaxed) }
      try await body()
      var bytes: [UInt8] = []
      var chunk = [UInt8](repeating: 0, count: 4096)
      while true {
        let count = read(fds[0], &chunk, chunk.count)
        if count <= 0 { break }
        bytes += chunk[0..<count]
      }
      return String(decoding: bytes, as: UTF8.self)
    }

    @Test(arguments: [ProcessPoolExecutor.WorkerStandardError.forward, .capture])
    func aFatalErrorMessageReachesTheCatch(_ mode: ProcessPoolExecutor.WorkerStandardError) async throws {
      try await withPool(Self.configuration(mode)) { (pool: ProcessPoolExecutor) async throws in
        do {
          _ = try await pool.submit(FailRow(), 17).value
          Issue.record("the task must crash")
        } catch let error as ProcessPoolError {
          #expect(error.code == .workerCrashed)
          #expect(error.crashReport?.contains("Fatal error: bad row 17") == true)
          #expect("\(error)".contains("Fatal error: bad row 17"))
          #expect(!"\(error)".contains("Current stack trace"))
        }
        // The next crash reports its own message, not the last one's.
        await #expect { try await pool.submit(FailRow(), 18).value } throws: {
          let report = ($0 as? ProcessPoolError)?.crashReport ?? ""
          return report.contains("bad row 18") && !report.contains("bad row 17")
        }
      }
    }

    @Test func anExitWithoutAMessageHasNoCrashReport() async throws {
      try await withPool(Self.configuration(.capture)) { (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(Crash(), .exit).value } throws: {
          let error = $0 as? ProcessPoolError
          return error?.code == .workerCrashed && error?.crashReport == nil
        }
      }
    }

    @Test func inheritedStderrIsNotRead() async throws {
      try await withPool(Self.configuration(.inherit)) { (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(FailRow(), 17).value } throws: {
          let error = $0 as? ProcessPoolError
          return error?.code == .workerCrashed && error?.crashReport == nil
        }
      }
    }

    @Test func forwardedLinesAreWholeAndCarryThePid() async throws {
      let pid = Mutex<Int32>(0)
      let forwarded = try await Self.capturingForwardedLines {
        try await withPool(Self.configuration(.forward)) { (pool: ProcessPoolExecutor) async throws in
          pid.withLock { $0 = pool.workerPIDs.first ?? 0 }
          _ = try await pool.submit(WriteToStandardError(), "first line\nsecond ").value
          pid.withLock { $0 = pool.workerPIDs.first ?? 0 }
          _ = try await pool.submit(WriteToStandardError(), "half\nno newline at the end").value
        }
      }
      let prefix = "[worker \(pid.withLock { $0 })] "
      #expect(
        forwarded == prefix + "first line\n" + prefix + "second half\n" + prefix + "no newline at the end\n")
    }

    @Test func capturedStderrIsNotForwarded() async throws {
      let forwarded = try await Self.capturingForwardedLines {
        try await withPool(Self.configuration(.capture)) { (pool: ProcessPoolExecutor) async throws in
          _ = try await pool.submit(WriteToStandardError(), "kept quiet\n").value
          await #expect(throws: ProcessPoolError.self) { try await pool.submit(FailRow(), 1).value }
        }
      }
      #expect(forwarded.isEmpty)
    }

    @Test func theReportIsBoundedAndStartsAtALine() async throws {
      try await withPool(Self.configuration(.capture)) { (pool: ProcessPoolExecutor) async throws in
        let noise = String(repeating: "noise line that fills the pipe\n", count: 1000)
        _ = try await pool.submit(WriteToStandardError(), noise).value
        await #expect { try await pool.submit(FailRow(), 17).value } throws: {
          guard let report = ($0 as? ProcessPoolError)?.crashReport else { return false }
          return report.utf8.count <= WorkerErrorStream.tailLimit && report.contains("bad row 17")
            && report.hasPrefix("noise line") && "\($0)".contains("Fatal error: bad row 17")
        }
      }
    }

    @Test func theBacktracerIsOffInWorkersUnlessAskedFor() async throws {
      let inherited = getenv("SWIFT_BACKTRACE").map { String(cString: $0) }
      for backtraces in [false, true] {
        var configuration = Self.configuration(.capture)
        configuration.workerBacktraces = backtraces
        try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
          let setting = try await pool.submit(ReadBacktraceSetting(), 0).value
          // The user's own setting is passed on unchanged.
          #expect(setting == inherited ?? (backtraces ? nil : "enable=no"))
        }
      }
    }

    @Test func aLaunchersStderrIsReadToo() async throws {
      var configuration = Self.configuration(.capture)
      configuration.launchers = [.command(["/bin/sh", "-c", "echo the launcher says no >&2; exit 3"])]
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(Square(), 2).value } throws: {
          let error = $0 as? ProcessPoolError
          return error?.code == .brokenPool && error?.crashReport?.contains("the launcher says no") == true
            && "\($0)".contains("the launcher says no")
        }
      }
    }
  }
}
