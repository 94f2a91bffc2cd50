import CProcessPoolShims
import Synchronization
import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// The fork server that starts local workers: who their parent is, what they inherit from the
/// pool's process at the moment they start, and what happens when the server or the pool's
/// process dies. Each test checks that nothing is left behind (the server's workers included).
extension WorkerProcessTests {
  @Suite struct ForkServerTests {
    init() {
      ProcessPoolLog.setHandler { _, _ in }
    }

    @Test func localWorkersAreForkedByTheServerWhichReportsTheirStatus() async throws {
      try await withPool(.workers(2)) { (pool: ProcessPoolExecutor) async throws in
        let pid = try await pool.submit(ProcessID(), 0).value
        let server = try #require(ForkServer.current)
        #expect(Self.parent(of: pid) == server.pid)
        #expect(pool.workerPIDs.contains(pid))
        // Its own process group, as a spawned worker has.
        #expect(getpgid(pid) == pid)
        await #expect { try await pool.submit(Crash(), .segfault).value } throws: {
          ($0 as? ProcessPoolError)?.termination == .signaled(SIGSEGV)
        }
        await #expect { try await pool.submit(Crash(), .exit).value } throws: {
          ($0 as? ProcessPoolError)?.termination == .exited(99)
        }
        #expect(try await pool.submit(Square(), 5).value == 25)
      }
    }

    @Test func workersThatExitBeforeTheirSpawnIsAnsweredAreReapedWithTheirStatus() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        #expect(try await pool.submit(Square(), 3).value == 9)
        let server = try #require(ForkServer.current)
        // No marker in their environment: each exits (76) as soon as it is forked, often before
        // the server has answered, or while it forks the next one.
        var spawned: [(pid: pid_t, socket: (Int32, Int32))] = []
        defer {
          for worker in spawned {
            close(worker.socket.0)
            close(worker.socket.1)
          }
        }
        for _ in 0..<20 {
          let ends = try Syscall.socketPair()
          let submission = ForkServer.requestSpawn(
            socket: ends.1, ring: -1, standardError: -1, environment: [],
            backtraceEntry: WorkerSpawner.backtraceEntry(backtraces: false))
          guard case .sent(let request) = submission, case .forked(let pid) = ForkServer.answer(to: request) else {
            close(ends.0)
            close(ends.1)
            Issue.record("the server did not fork: \(submission)")
            return
          }
          spawned.append((pid, ends))
        }
        for worker in spawned {
          let status = try ForkServer.waitPID(worker.pid, noHang: false)
          #expect(status.map { PoolCore.termination(fromWaitStatus: $0) } == .exited(PP_EXIT_NO_ENTRY))
        }
        // None left as a zombie of the server.
        let left = Set(LeakCheck.childPIDs(of: server.pid)).intersection(spawned.map(\.pid))
        #expect(left.isEmpty, "workers left: \(left)")
      }
    }

    @Test func aForkedWorkerRunsOnOneThread() async throws {
      // Its parent-death signal ends it with its server, so it starts no watchdog thread (a
      // synchronous task runs on the loop's thread: no other thread exists while it runs).
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let pid = try await pool.submit(ProcessID(), 0).value
        let server = try #require(ForkServer.current)
        #expect(Self.parent(of: pid) == server.pid)
        #expect(try await pool.submit(ThreadCount(), 0).value == 1)
      }
    }

    @Test func aWorkerGetsTheEnvironmentAndDirectoryOfItsStartNotOfTheServers() async throws {
      // The server is running before the environment and the directory change.
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        #expect(try await pool.submit(ReadEnvironment(), "PP_FORK_SERVER_TEST").value == nil)
      }
      #expect(ForkServer.current != nil)
      let previous = try #require(Self.workingDirectory())
      setenv("PP_FORK_SERVER_TEST", "set after the server started", 1)
      // Not UTF-8: passed on as it is.
      let latin1: [CChar] = [CChar(bitPattern: 0xE9), 0x74, CChar(bitPattern: 0xE9), 0]
      setenv("PP_FORK_SERVER_BYTES", latin1, 1)
      #expect(chdir("/tmp") == 0)
      defer {
        unsetenv("PP_FORK_SERVER_TEST")
        unsetenv("PP_FORK_SERVER_BYTES")
        _ = chdir(previous)
      }
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let value = try await pool.submit(ReadEnvironment(), "PP_FORK_SERVER_TEST").value
        #expect(value == "set after the server started")
        #expect(try await pool.submit(WorkingDirectory(), 0).value == "/tmp")
        #expect(try await pool.submit(ReadEnvironmentBytes(), "PP_FORK_SERVER_BYTES").value == [0xE9, 0x74, 0xE9])
        // Nothing of the server's own environment: neither its marker nor its linker setting.
        #expect(try await pool.submit(ReadEnvironment(), "PROCESSPOOL_WORKER_FD").value == nil)
        if getenv("LD_BIND_NOW") == nil {
          #expect(try await pool.submit(ReadEnvironment(), "LD_BIND_NOW").value == nil)
        }
      }
    }

    @Test func aPoolWithBacktracesSpawnsItsWorkers() async throws {
      // The backtracer is set up when the runtime starts: a worker that wants it on cannot
      // come from a server that started with it off.
      guard getenv("SWIFT_BACKTRACE") == nil else { return }
      var configuration = ProcessPoolExecutor.Configuration.workers(1)
      configuration.workerBacktraces = true
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let pid = try await pool.submit(ProcessID(), 0).value
        #expect(Self.parent(of: pid) == getpid())
      }
    }

    @Test func aKilledServerTakesItsWorkersAndTheNextOnesComeFromANewServer() async throws {
      try await withPool(.workers(2)) { (pool: ProcessPoolExecutor) async throws in
        for try await _ in try pool.map(Square(), [1, 2], chunksize: 1) {}
        let server = try #require(ForkServer.current)
        let workers = pool.workerPIDs
        let pidfds = workers.map { pp_pidfd_open($0) }
        #expect(!workers.isEmpty && pidfds.allSatisfy { $0 >= 0 })
        defer { for pidfd in pidfds where pidfd >= 0 { close(pidfd) } }
        // The pool logs each death once it has reaped the worker.
        let reaped = ConditionLock()
        let reports = Mutex(Set<Int32>())
        ProcessPoolLog.setHandler { _, message in
          reaped.withLock {
            reports.withLock { seen in
              for worker in workers where message.contains("worker \(worker)") { seen.insert(worker) }
            }
            reaped.broadcast()
          }
        }
        defer { ProcessPoolLog.setHandler { _, _ in } }
        kill(server.pid, SIGKILL)
        // Its workers die with it (their parent-death signal), without any task.
        for (worker, pidfd) in zip(workers, pidfds) where pidfd >= 0 {
          var descriptor = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
          #expect(poll(&descriptor, 1, 30_000) == 1, "worker \(worker) outlived its fork server")
        }
        let allReaped = reaped.withLock {
          reaped.wait(until: .now.advanced(by: .seconds(30))) { reports.withLock { $0.count } == workers.count }
        }
        #expect(allReaped, "the pool did not report the death of every worker")
        // The pool replaces it, through a new server, and goes on.
        var values: [Int] = []
        for x in 0..<4 { values.append(try await pool.submit(Square(), x).value) }
        #expect(values == [0, 1, 4, 9])
        let next = try await pool.submit(ProcessID(), 0).value
        let replacement = try #require(ForkServer.current)
        #expect(replacement.pid != server.pid)
        #expect(Self.parent(of: next) == replacement.pid)
      }
    }

    @Test func aKilledParentLeavesNoForkServerAndNoWorker() async throws {
      // The test process adopts orphans (a subreaper), so it can wait for them.
      pp_set_child_subreaper(1)
      defer { pp_set_child_subreaper(0) }
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        // A worker with a pool of its own: its fork server and that server's sleeping worker.
        let inner = try await pool.submit(StartNestedPoolWithServer(), 0).value
        #expect(inner.count == 2 && inner[0] != inner[1])
        let parent = pool.workerPIDs[0]
        #expect(inner.allSatisfy { $0 > 0 && $0 != parent })
        killAndAwaitReport(parent)
        expectExit(of: inner, "the nested pool of a killed worker")
      }
    }

    @Test func aRetiredWorkerFlushesItsOutputAndRunsNoExitHandler() async throws {
      // As Python's forked workers (`os._exit`): stdio flushed, no exit handler of the program.
      let fifo = "/tmp/pp-fifo-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
      #expect(mkfifo(fifo, 0o600) == 0)
      defer { unlink(fifo) }
      // Open first, so that the worker's open for writing does not wait.
      let output = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
      #expect(output >= 0)
      defer { close(output) }
      var configuration = ProcessPoolExecutor.Configuration.workers(1)
      configuration.maxTasksPerChild = 1
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        // Its parent as the worker saw it: the worker exits right after its only task, so its
        // /proc entry may be gone by the time the result is read.
        let parent = try await pool.submit(PrintUnflushed(path: fifo), 0).value
        #expect(parent == ForkServer.current?.pid)
      }
      // The worker is reaped: its writes are all in the FIFO, and its end is closed.
      var text: [UInt8] = []
      var bytes = [UInt8](repeating: 0, count: 256)
      while true {
        let got = read(output, &bytes, bytes.count)
        if got > 0 {
          text += bytes[0..<got]
        } else if got < 0 && errno == EINTR {
          continue
        } else {
          break
        }
      }
      #expect(String(decoding: text, as: UTF8.self) == "written, not flushed")
    }

    @Test func aWorkerSlowToExitDoesNotHoldUpAnotherPoolsWorkers() async throws {
      // The server serves every pool of the process: a pool waiting for its worker's exit must
      // not keep it from starting another pool's workers.
      let gate = TestGate()
      defer { gate.close() }
      let check = LeakCheck()
      var configuration = ProcessPoolExecutor.Configuration.workers(1)
      configuration.maxTasksPerChild = 1
      let slow = try ProcessPoolExecutor(configuration: configuration)
      // The worker retires after this task; its last flush of stdout then blocks (see the task).
      #expect(try await slow.submit(HoldExitAtGate(path: gate.path), 0).value == 0)
      #expect(await gate.waitForArrivals(1))
      // It ends its side of the socket: the pool waits for its exit from now on.
      gate.open()
      #expect(await gate.waitForArrivals(1))
      // (Not `withPool`: the slow pool's worker is still there when this one is done.)
      let other = try ProcessPoolExecutor(configuration: .workers(2))
      #expect(try await other.submit(Square(), 6).value == 36)
      await other.shutdown(wait: true)
      other.core.waitForIOThread()
      gate.open()
      await slow.shutdown(wait: true)
      slow.core.waitForIOThread()
      check.verify()
    }

    /// The parent pid of `pid` (from /proc), or nil.
    static func parent(of pid: Int32) -> Int32? {
      guard let stat = LeakCheck.readFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
      let fields = stat[stat.index(after: close)...].split(separator: " ")
      return fields.count > 1 ? Int32(fields[1]) : nil
    }

    static func workingDirectory() -> String? {
      var buffer = [CChar](repeating: 0, count: 4096)
      guard getcwd(&buffer, buffer.count) != nil else { return nil }
      return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
  }
}

/// The value of an environment variable in the worker.
struct ReadEnvironment: ProcessTask {
  func run(_ name: String) async throws -> String? { getenv(name).map { String(cString: $0) } }
}

/// The bytes of an environment variable in the worker.
struct ReadEnvironmentBytes: ProcessTask {
  func run(_ name: String) async throws -> [UInt8]? {
    getenv(name).map { Array(UnsafeRawBufferPointer(start: $0, count: strlen($0))) }
  }
}

/// The worker's working directory.
struct WorkingDirectory: ProcessTask {
  func run(_: Int) async throws -> String? { WorkerProcessTests.ForkServerTests.workingDirectory() }
}

/// Starts a pool inside the worker with a task that never ends, keeps it alive, and returns the
/// pids of that pool's fork server and of its worker.
struct StartNestedPoolWithServer: ProcessTask {
  func run(_: Int) async throws -> [Int32] {
    let pool = try ProcessPoolExecutor(maxWorkers: 1)
    let worker = try await pool.submit(ProcessID(), 0).value
    _ = try pool.submit(Sleep(), 3_600_000)
    NestedPools.keep(pool)
    return [ForkServer.current?.pid ?? -1, worker]
  }
}

/// Sends the worker's stdout to the FIFO at `path`, leaves a line without its newline in the
/// buffer, and registers an exit handler that would add to it. Returns the worker's parent's pid.
struct PrintUnflushed: ProcessTask {
  var path: String

  func run(_: Int) async throws -> Int32 {
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0, dup2(fd, 1) == 1 else { throw GateError(message: "cannot open \(path)") }
    close(fd)
    print("written, not flushed", terminator: "")
    atexit { print(" and an exit handler ran", terminator: "") }
    return getppid()
  }
}

/// Makes the worker slow to exit once stopped, without any exit handler (a forked worker runs
/// none): its stdout becomes a full pipe with a byte pending in its buffer, so the flush before
/// it exits blocks until a thread drains the pipe. That thread waits at the gate at `path`, ends
/// the worker's side of its socket (so the pool waits for the exit from then on), waits at the
/// gate again, then drains the pipe.
struct HoldExitAtGate: ProcessTask {
  var path: String

  func run(_ x: Int) async throws -> Int {
    var ends: [Int32] = [0, 0]
    guard pipe(&ends) == 0, dup2(ends[1], 1) == 1 else { throw GateError(message: "no pipe") }
    close(ends[1])
    // Full: every write to it blocks from now on.
    _ = fcntl(1, F_SETFL, fcntl(1, F_GETFL) | O_NONBLOCK)
    var chunk = [UInt8](repeating: 0, count: 4096)
    while write(1, &chunk, chunk.count) > 0 {}
    _ = fcntl(1, F_SETFL, fcntl(1, F_GETFL) & ~O_NONBLOCK)
    // Buffered (stdout is a pipe here, or a terminal: no newline), not written.
    print("x", terminator: "")
    let (path, drain) = (path, ends[0])
    try OSThread.start(name: "hold-exit") {
      for round in 0..<2 {
        guard let fd = try? connectToGate(path) else { return }
        var byte: UInt8 = 0
        while read(fd, &byte, 1) < 0 && errno == EINTR {}
        close(fd)
        if round == 0 { shutdown(3, Int32(SHUT_WR)) }
      }
      var bytes = [UInt8](repeating: 0, count: 4096)
      while true {
        let got = read(drain, &bytes, bytes.count)
        if got > 0 || (got < 0 && errno == EINTR) { continue }
        break
      }
    }
    return x
  }
}

/// How many threads the worker has while the task runs (from /proc).
struct ThreadCount: ProcessTask {
  func run(_: Int) async throws -> Int {
    let status = LeakCheck.readFile("/proc/self/status") ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("Threads:") }
    return line.flatMap { Int($0.dropFirst("Threads:".count).trimmingPrefix(while: \.isWhitespace)) } ?? -1
  }
}
