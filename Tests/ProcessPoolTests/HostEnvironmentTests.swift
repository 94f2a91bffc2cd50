import CProcessPoolShims
import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// What a host program does to its own process (signal dispositions, a terminal's Ctrl-C) must
/// not reach its workers. Each test changes the process of an outer worker, which then runs a
/// nested pool and reports what that pool's workers saw: the test runner itself is not touched.
extension WorkerProcessTests {
  @Suite struct HostEnvironmentTests {
    init() {
      ProcessPoolLog.setHandler { _, _ in }
    }

    @Test func workersDoNotInheritAnIgnoredSIGCHLD() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let seen = try await pool.submit(NestedSignalDisposition(signal: SIGCHLD), 0).value
        #expect(seen == .init(hostIgnored: true, workerIgnored: false))
      }
    }

    @Test func workersKeepAnIgnoredSIGINT() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let seen = try await pool.submit(NestedSignalDisposition(signal: SIGINT), 0).value
        #expect(seen == .init(hostIgnored: true, workerIgnored: true))
      }
    }

    @Test func ctrlCToTheHostsProcessGroupDoesNotReachItsWorkers() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        #expect(try await pool.submit(InterruptOwnProcessGroup(), 7).value == 7)
      }
    }
  }
}

/// Whether a signal is ignored in this process.
func signalIsIgnored(_ signal: Int32) -> Bool {
  var action = sigaction()
  sigaction(signal, nil, &action)
  return unsafeBitCast(action.__sigaction_handler.sa_handler, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self)
}

struct SignalIsIgnored: ProcessTask {
  var signal: Int32
  func run(_: Int) async throws -> Bool { signalIsIgnored(signal) }
}

/// Ignores `signal` in this worker (as a host program may), then reports whether a nested pool's
/// worker starts with it ignored too.
struct NestedSignalDisposition: ProcessTask {
  struct Seen: Codable, Sendable, Equatable {
    var hostIgnored: Bool
    var workerIgnored: Bool
  }
  var signal: Int32

  func run(_: Int) async throws -> Seen {
    let previous = Glibc.signal(signal, SIG_IGN)
    defer { Glibc.signal(signal, previous) }
    let pool = try ProcessPoolExecutor(maxWorkers: 1)
    let seen = Seen(
      hostIgnored: signalIsIgnored(signal),
      workerIgnored: try await pool.submit(SignalIsIgnored(signal: signal), 0).value)
    // A worker that exits while SIGCHLD is ignored leaves no status to reap: restore it first.
    Glibc.signal(signal, previous)
    await pool.shutdown()
    return seen
  }
}

/// Plays a terminal's Ctrl-C: makes this worker a process-group leader that handles SIGINT,
/// starts a nested pool with a task running, sends SIGINT to its own process group, and returns
/// what the nested task returns (it fails with "signal 2" when its worker got the SIGINT).
struct InterruptOwnProcessGroup: ProcessTask {
  func run(_ x: Int) async throws -> Int {
    let previous = signal(SIGINT) { _ in }
    defer { signal(SIGINT, previous) }
    guard setpgid(0, 0) == 0 else { throw GateError(message: "setpgid: \(errno)") }
    let pool = try ProcessPoolExecutor(maxWorkers: 1)
    let gate = TestGate()
    defer { gate.close() }
    let running = try pool.submit(gate.task, x)
    guard await gate.waitForArrivals(1) else { throw GateError(message: "the nested task never started") }
    kill(0, SIGINT)
    gate.open()
    let result: Result<Int, any Error>
    do {
      result = .success(try await running.value)
    } catch {
      result = .failure(error)
    }
    await pool.shutdown()
    return try result.get()
  }
}
