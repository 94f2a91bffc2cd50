import CProcessPoolShims
import Synchronization
import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// Crashes, timeouts, forced shutdown, recycling, initializers and a dying parent, with real
/// workers (CPython's test_deadlock.py, test_process_pool.py and test_init.py cases, and the
/// peers' complaints). Each test checks that nothing is left behind.
extension WorkerProcessTests {
  @Suite struct FaultTests {
    init() {
      // The crash reports are expected here; keep the test log readable.
      ProcessPoolLog.setHandler { _, _ in }
    }

    @Test(arguments: [Crash.Mode.exit, .trap, .segfault, .abort])
    func crashFailsOnlyItsTaskAndTheWorkerIsReplaced(_ mode: Crash.Mode) async throws {
      try await withPool(.workers(2)) { (pool: ProcessPoolExecutor) async throws in
        let crashing = try pool.submit(Crash(), mode)
        do {
          _ = try await crashing.value
          Issue.record("a crashed task must fail")
        } catch let error as ProcessPoolError {
          #expect(error.code == .workerCrashed)
          #expect(error.workerPID != nil)
          switch mode {
          case .exit: #expect(error.termination == .exited(99))
          case .segfault: #expect(error.termination == .signaled(SIGSEGV))
          case .abort: #expect(error.termination == .signaled(SIGABRT))
          case .trap:
            #expect(error.termination == .signaled(SIGTRAP) || error.termination == .signaled(SIGILL))
          }
          #expect("\(error)".contains("\(error.workerPID!)"))
        }
        // The pool goes on.
        let results = try await withThrowingTaskGroup(of: Int.self) { group in
          for x in 0..<6 { group.addTask { try await pool.submit(Square(), x).value } }
          return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.sorted() == [0, 1, 4, 9, 16, 25])
        let statistics = pool.statistics
        #expect(statistics.workersCrashed == 1)
        #expect(statistics.crashes.values.reduce(0, +) == 1)
        #expect(mode != .exit || statistics.crashes[.exited(99)] == 1)
        #expect(statistics.workersFailedToStart == 0 && statistics.workersStopped == 0)
        #expect(statistics.timeStartingWorkers > .zero)
        #expect(statistics.workersIdle + statistics.workersBusy <= statistics.workersAlive)
      }
    }

    @Test func aCrashAfterQuickJobsOnTheSameWorkerFailsOnlyItsOwnItem() async throws {
      // Quick jobs reach the worker together and run one after the other there; each reply must
      // leave before the next job starts, or a crash would lose the replies held back and blame
      // the crash on the first of them.
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        var failed: [Int] = []
        var iterator = try pool.map(CrashAt(at: 40), Array(0..<64), chunksize: 1).makeAsyncIterator()
        for position in 0..<64 {
          do {
            #expect(try await iterator.next() == position)
          } catch let error as ProcessPoolError {
            #expect(error.code == .workerCrashed)
            failed.append(position)
          }
        }
        #expect(try await iterator.next() == nil)
        #expect(failed == [40])
        #expect(pool.statistics.workersCrashed == 1)
      }
    }

    @Test func crashesAndProtocolErrorsGoToTheLogHandler() async throws {
      let reports = Mutex<[(ProcessPoolLog.Level, String)]>([])
      ProcessPoolLog.setHandler { level, message in reports.withLock { $0.append((level, message)) } }
      defer { ProcessPoolLog.setHandler { _, _ in } }
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        // The report is made before the future fails, so it is there when the await returns.
        await #expect(throws: ProcessPoolError.self) { try await pool.submit(Crash(), .exit).value }
        let crashed = reports.withLock { $0 }
        #expect(crashed.count == 1)
        #expect(crashed.first?.0 == .warning)
        #expect(crashed.first?.1.contains("died with exit code 99; it is replaced") == true)
        await #expect(throws: ProcessPoolError.self) { try await pool.submit(WriteGarbage(), 16).value }
        let all = reports.withLock { $0 }
        #expect(all.count == 2)
        #expect(all.last?.0 == .error && all.last?.1.contains("broke the protocol") == true)
      }
    }

    @Test func workerKilledFromOutsideFailsItsTask() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let future = try pool.submit(gate.task, 1)
        #expect(await gate.waitForArrivals(1))
        let pid = pool.workerPIDs[0]
        kill(pid, SIGKILL)
        await #expect { try await future.value } throws: {
          let error = $0 as? ProcessPoolError
          return error?.code == .workerCrashed && error?.workerPID == pid && error?.termination == .signaled(SIGKILL)
        }
        #expect(try await pool.submit(Square(), 8).value == 64)
      }
    }

    @Test func breakPoolPolicyFailsEverythingWithItsOwnError() async throws {
      var configuration = ProcessPoolExecutor.Configuration.workers(2)
      configuration.crashPolicy = .breakPool
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let blocked = try (0..<3).map { try pool.submit(gate.task, $0) }
        #expect(await gate.waitForArrivals(2))
        kill(pool.workerPIDs[0], SIGTERM)
        var errors: [ProcessPoolError] = []
        for future in blocked {
          do {
            _ = try await future.value
          } catch let error as ProcessPoolError {
            errors.append(error)
          }
        }
        #expect(errors.count == 3)
        #expect(errors.allSatisfy { $0.code == .brokenPool || $0.code == .workerCrashed })
        #expect { try pool.submit(Square(), 2) } throws: { ($0 as? ProcessPoolError)?.code == .brokenPool }
      }
    }

    @Test func crashWhileReceivingABigPayload() async throws {
      // gh-94777: a worker that dies while the parent writes a large payload must not wedge it.
      try await withPool(.workers(2)) { (pool: ProcessPoolExecutor) async throws in
        let big = [UInt8](repeating: 1, count: 4 * 1024 * 1024 + 1)
        let gate = TestGate()
        defer { gate.close() }
        let blocker = try pool.submit(gate.task, 0)
        #expect(await gate.waitForArrivals(1))
        let victim = pool.workerPIDs[0]
        let echoes = try (0..<4).map { _ in try pool.submit(Echo(), big) }
        kill(victim, SIGKILL)
        await #expect(throws: ProcessPoolError.self) { try await blocker.value }
        for future in echoes {
          do {
            let back = try await future.value
            #expect(back.count == big.count)
          } catch let error as ProcessPoolError {
            #expect(error.code == .workerCrashed)
          }
        }
      }
    }

    @Test(arguments: [16, 1 << 20])
    func aWorkerThatSendsGarbageIsTreatedAsCrashed(_ bytes: Int) async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(WriteGarbage(), bytes).value } throws: {
          ($0 as? ProcessPoolError)?.code == .protocolViolation
        }
        #expect(try await pool.submit(Square(), 6).value == 36)
      }
    }

    @Test func decodingFailuresOnEitherSideFailOnlyTheirFuture() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(ReturnParentRefusesToDecode(), 0).value } throws: {
          ($0 as? ProcessPoolError)?.code == .decodingFailed
        }
        await #expect { try await pool.submit(TakeWorkerRefusesToDecode(), WorkerRefusesToDecode()).value } throws: {
          ($0 as? ProcessPoolError)?.code == .decodingFailed
        }
        #expect(try await pool.submit(Square(), 5).value == 25)
        #expect(pool.statistics.workersStarted == 1)
      }
    }

    @Test func cancelWithTerminationStopsARunningTask() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let running = try pool.submit(gate.task, 0)
        #expect(await gate.waitForArrivals(1))
        #expect(!running.cancel())
        #expect(running.cancel(terminatingWorker: true))
        #expect(running.isCancelled && running.isDone)
        await #expect { try await running.value } throws: { ($0 as? ProcessPoolError)?.code == .cancelled }
        // Its worker was replaced; the pool goes on.
        #expect(try await pool.submit(Square(), 4).value == 16)
        #expect(pool.statistics.workersStarted == 2)
      }
    }

    @Test func workersThatKeepDyingAtStartBreakThePool() async throws {
      var configuration = ProcessPoolExecutor.Configuration()
      configuration.launchers = [.command(["/bin/false"], workers: 2)]
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(Square(), 2).value } throws: {
          let error = $0 as? ProcessPoolError
          return error?.code == .brokenPool && "\(error!)".contains("(/bin/false) in a row died while starting")
            && error?.termination == .exited(1)
        }
        #expect(pool.statistics.workersStarted == 3)
        #expect { try pool.submit(Square(), 2) } throws: { ($0 as? ProcessPoolError)?.code == .brokenPool }
      }
    }

    /// Through the socket, and through the memory shared with the worker (large values).
    @Test(arguments: [false, true])
    func submitNeverBlocksOnAWorkerThatDoesNotRead(sharedMemory: Bool) async throws {
      // gh-105829: far more than the socket buffers hold, queued to a worker that is busy.
      SharedValues.unavailable.store(!sharedMemory, ordering: .relaxed)
      defer { SharedValues.unavailable.store(false, ordering: .relaxed) }
      var configuration = ProcessPoolExecutor.Configuration.workers(1)
      configuration.jobsPerWorker = 32
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let blocker = try pool.submit(gate.task, 0)
        #expect(await gate.waitForArrivals(1))
        let payload = [UInt8](repeating: 9, count: 4 << 20)
        let echoes = try (0..<24).map { _ in try pool.submit(Echo(), payload) }
        #expect(echoes.allSatisfy { !$0.isDone })
        gate.open()
        _ = try await blocker.value
        for future in echoes { #expect(try await future.value.count == payload.count) }
      }
    }

    @Test func workerDyingWhileWritingItsResult() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(DieWhileWritingResult(), 0).value } throws: {
          let error = $0 as? ProcessPoolError
          return error?.code == .workerCrashed && error?.termination == .exited(7)
        }
        #expect(try await pool.submit(Square(), 11).value == 121)
      }
    }

    @Test func taskTimeoutStopsOnlyThatTask() async throws {
      try await withPool(.workers(2)) { (pool: ProcessPoolExecutor) async throws in
        let slow = try pool.submit(Sleep(), 600_000, timeout: .milliseconds(200))
        let quick = try pool.submit(Square(), 9)
        await #expect { try await slow.value } throws: {
          let error = $0 as? ProcessPoolError
          return error?.code == .taskTimedOut && error?.workerPID != nil
        }
        #expect(try await quick.value == 81)
        #expect(try await pool.submit(Square(), 10).value == 100)
        #expect(pool.statistics.tasksTimedOut == 1)
      }
    }

    @Test func aTaskThatIgnoresSIGTERMIsKilledAfterTheGracePeriod() async throws {
      var configuration = ProcessPoolExecutor.Configuration.workers(1)
      configuration.terminationGracePeriod = .milliseconds(100)
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let stubborn = try pool.submit(IgnoreTermAndSleep(), 0, timeout: .milliseconds(100))
        await #expect { try await stubborn.value } throws: {
          ($0 as? ProcessPoolError)?.code == .taskTimedOut
        }
        // One worker at most: this runs only once the stubborn one was killed and reaped.
        #expect(try await pool.submit(Square(), 3).value == 9)
        #expect(pool.statistics.workersStarted == 2)
      }
    }

    @Test(arguments: [SIGTERM, SIGKILL])
    func forcedShutdownStopsRunningWork(_ signal: Int32) async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let running = try pool.submit(gate.task, 0)
        let queued = try pool.submit(Square(), 2)
        let later = try pool.submit(Square(), 3)
        #expect(await gate.waitForArrivals(1))
        if signal == SIGTERM { pool.terminateWorkers() } else { pool.killWorkers() }
        await #expect { try await running.value } throws: {
          let error = $0 as? ProcessPoolError
          return error?.code == .brokenPool && error?.termination == .signaled(signal)
            && "\(error!)".contains("forcefully shut down")
        }
        // A job already on the worker's socket fails with it; one still queued is cancelled.
        for future in [queued, later] { await #expect(throws: ProcessPoolError.self) { try await future.value } }
        #expect { try pool.submit(Square(), 2) } throws: { ($0 as? ProcessPoolError)?.code == .shutDown }
      }
    }

    @Test func forcedShutdownOfAPoolThatNeverStartedIsANoOp() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        pool.terminateWorkers()
        pool.killWorkers()
        #expect(pool.statistics.workersStarted == 0)
      }
    }

    @Test func maxTasksPerChildReplacesWorkers() async throws {
      var configuration = ProcessPoolExecutor.Configuration.workers(1)
      configuration.maxTasksPerChild = 3
      configuration.jobsPerWorker = 1
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        var pids: [Int32] = []
        for _ in 0..<4 { pids.append(try await pool.submit(ProcessID(), 0).value) }
        #expect(Set(pids[0..<3]).count == 1)
        #expect(pids[3] != pids[0])
        // One runs tasks; its replacement may stand by, and the worker it replaced may still be
        // exiting (at most three processes per worker).
        #expect(pool.workerPIDs.count <= 3)
        #expect(pool.statistics.workersRetired == 1)
      }
    }

    @Test(arguments: [(1, 2, 6), (2, 2, 8), (3, 1, 6)])
    func maxTasksPerChildWithABacklogDoesNotDeadlock(_ workers: Int, _ maxTasks: Int, _ tasks: Int) async throws {
      // gh-115634 and test_max_tasks_early_shutdown.
      var configuration = ProcessPoolExecutor.Configuration.workers(workers)
      configuration.maxTasksPerChild = maxTasks
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let futures = try (0..<tasks).map { try pool.submit(Multiply(factor: 2), $0) }
        await pool.shutdown(wait: true)
        var results: [Int] = []
        for future in futures { results.append(try await future.value) }
        #expect(results == (0..<tasks).map { $0 * 2 })
      }
    }

    @Test func droppedPoolWithRetiringWorkersFinishesItsBacklog() async throws {
      // gh-119592 / gh-152967: CPython fails these with "garbage collected"; we finish them.
      let check = LeakCheck()
      var core: PoolCore?
      var futures: [ProcessFuture<Int>] = []
      do {
        var configuration = ProcessPoolExecutor.Configuration.workers(1)
        configuration.maxTasksPerChild = 1
        let pool = try ProcessPoolExecutor(configuration: configuration)
        futures = try (0..<3).map { try pool.submit(Square(), $0) }
        core = pool.core
      }
      var results: [Int] = []
      for future in futures { results.append(try await future.value) }
      #expect(results == [0, 1, 4])
      await core?.waitUntilStopped()
      core?.waitForIOThread()
      core = nil
      check.verify()
    }

    @Test func initializerRunsInEveryWorker() async throws {
      try await withPool(.workers(2), initializer: SetGreeting(greeting: "initialized")) {
        (pool: ProcessPoolExecutor) async throws in
        let futures = try (0..<2).map { try pool.submit(ReadGreeting(), $0) }
        for future in futures { #expect(try await future.value == "initialized") }
      }
    }

    @Test func failingInitializerBreaksThePool() async throws {
      try await withPool(.workers(2), initializer: FailingInitializer()) { (pool: ProcessPoolExecutor) async throws in
        let future = try pool.submit(Square(), 2)
        await #expect { try await future.value } throws: {
          let error = $0 as? ProcessPoolError
          return error?.code == .brokenPool && "\(error!)".contains("error in initializer")
        }
        #expect { try pool.submit(Square(), 2) } throws: { ($0 as? ProcessPoolError)?.code == .brokenPool }
      }
    }

    @Test func nestedPoolsWork() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        #expect(try await pool.submit(NestedSquare(), 12).value == 144)
      }
    }

    @Test func workerExitsWhenItsParentIsKilled() async throws {
      // The test process adopts orphans (a subreaper), so the grandchild can be waited for.
      pp_set_child_subreaper(1)
      defer { pp_set_child_subreaper(0) }
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let grandchild = try await pool.submit(StartNestedSleeper(), 0).value
        #expect(grandchild > 0)
        let parent = pool.workerPIDs[0]
        // The pool reports the crash once it has reaped the parent; by then the grandchild is
        // ours (re-parented when its parent died).
        killAndAwaitReport(parent)
        // The grandchild (a sleeping worker of the killed parent) must exit by itself, and so
        // must the killed parent's fork server (adopted by now, like every orphan of the parent).
        let ours = ForkServer.current?.pid
        let orphans = Set([grandchild] + LeakCheck.childPIDs().filter { $0 != ours })
        expectExit(of: orphans, "worker \(grandchild)'s pool")
      }
    }
  }
}

/// Ignores SIGTERM, then sleeps: only SIGKILL stops it.
struct IgnoreTermAndSleep: ProcessTask {
  func run(_: Int) async throws -> Int {
    signal(SIGTERM, SIG_IGN)
    usleep(600_000_000)
    return 0
  }
}
