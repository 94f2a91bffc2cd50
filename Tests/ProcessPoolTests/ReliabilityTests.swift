import CProcessPoolShims
import Synchronization
import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// The failure classes of issue 19 found by trying to break the pool: hangs, lost work, work
/// reported cancelled that ran, and lifecycle rules. Each test failed before its fix.
extension WorkerProcessTests {
  @Suite struct ReliabilityTests {
    init() {
      ProcessPoolLog.setHandler { _, _ in }
    }

    static func temporaryPath(_ name: String) -> String {
      "/tmp/pp-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    // MARK: Hangs and lost work

    @Test func theExitHookIsRegisteredBeforeSubmitReturns() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let future = try pool.submit(Square(), 3)
        // `main` may return right here: the hook that waits for the work must exist already.
        #expect(ActivePools.isRegistered(pool.core))
        #expect(try await future.value == 9)
      }
    }

    @Test func submitNeverSpawnsAWorkerOnTheCallersThread() async throws {
      try await withPool(.workers(4)) { (pool: ProcessPoolExecutor) async throws in
        let futures = try (0..<8).map { try pool.submit(Square(), $0) }
        for (x, future) in futures.enumerated() { #expect(try await future.value == x * x) }
        #expect(pool.statistics.workersStarted >= 1)
        #expect(pool.core.spawnsOffIOThread.load(ordering: .relaxed) == 0)
      }
    }

    @Test func workSubmittedRightBeforeExitStillRuns() async throws {
      // CPython's test_interpreter_shutdown.
      let path = Self.temporaryPath("exit-mark")
      defer { unlink(path) }
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        // The worker exits (code 0) right after submitting to a nested pool of its own.
        await #expect { try await pool.submit(SubmitAndExit(path: path), 42).value } throws: {
          ($0 as? ProcessPoolError)?.termination == .exited(0)
        }
        #expect(marks(path) == ["42"])
      }
    }

    @Test func terminateWorkersEscalatesToSIGKILLAndDropsTheValueOfATaskIgnoringSIGTERM() async throws {
      var configuration = ProcessPoolExecutor.Configuration.workers(1)
      configuration.terminationGracePeriod = .milliseconds(200)
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let stubborn = try pool.submit(IgnoreTermAtGate(path: gate.path), 1)
        #expect(await gate.waitForArrivals(1))
        pool.terminateWorkers()
        // The task ignores SIGTERM and returns its value: that value must not be delivered.
        gate.open()
        await #expect { try await stubborn.value } throws: {
          let error = $0 as? ProcessPoolError
          return error?.code == .brokenPool && error?.termination == .signaled(SIGKILL)
        }
        // And the shutdown returns (the worker was killed after the grace period).
        await pool.shutdown(wait: true)
        #expect(pool.workerPIDs.isEmpty)
      }
    }

    @Test(arguments: [ForkAndHoldSocket.Mode.exit, .value])
    func aTaskThatForksDelaysNeitherCrashDetectionNorShutdown(_ mode: ForkAndHoldSocket.Mode) async throws {
      let gate = TestGate()
      defer { gate.close() }
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let future = try pool.submit(ForkAndHoldSocket(path: gate.path), mode)
        #expect(await gate.waitForArrivals(1))
        // The forked child holds the worker's socket until the gate opens, which is after the
        // worker's end is seen and the pool has shut down.
        switch mode {
        case .exit:
          await #expect { try await future.value } throws: {
            ($0 as? ProcessPoolError)?.termination == .exited(7)
          }
          #expect(try await pool.submit(Square(), 4).value == 16)
        case .value:
          #expect(try await future.value == 5)
        }
        await pool.shutdown(wait: true)
        #expect(pool.workerPIDs.isEmpty)
        gate.open()
      }
    }

    @Test func aForkedChildExitsWithoutWaitingForItsParentsPool() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        #expect(try await pool.submit(Square(), 2).value == 4)
        let child = fork()
        if child == 0 {
          // The parent's pool is not the child's: submitting throws, and exit runs the exit
          // hook, which must not wait for the parent's workers.
          let refused = (try? pool.submit(Square(), 3)) == nil
          exit(refused ? 0 : 3)
        }
        #expect(child > 0)
        let pidfd = pp_pidfd_open(child)
        #expect(pidfd >= 0)
        var descriptor = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
        let exited = poll(&descriptor, 1, 30_000) == 1
        close(pidfd)
        #expect(exited, "the forked child hung at exit")
        if !exited { kill(child, SIGKILL) }
        var status: Int32 = 0
        waitpid(child, &status, 0)
        #expect(status == 0, "the child's exit status: \(status)")
        // The parent's pool goes on.
        #expect(try await pool.submit(Square(), 5).value == 25)
      }
    }

    @Test func aDoneCallbackThatWaitsForAnotherFutureGetsAnErrorInsteadOfStallingThePool() async throws {
      try await withPool(.workers(2)) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let blocked = try pool.submit(gate.task, 1)
        #expect(await gate.waitForArrivals(1))
        let seen = Mutex<ProcessPoolError.Code?>(nil)
        let first = try pool.submit(Square(), 2)
        let called = ConditionLock()
        first.addDoneCallback { _ in
          do {
            _ = try blocked.result(timeout: .seconds(60))
          } catch let error as ProcessPoolError {
            seen.withLock { $0 = error.code }
          }
          called.withLock { called.broadcast() }
        }
        #expect(try await first.value == 4)
        #expect(called.withLock { called.wait(until: .now.advanced(by: .seconds(30))) { seen.withLock { $0 } != nil } })
        #expect(seen.withLock { $0 } == .wouldDeadlock)
        gate.open()
        #expect(try await blocked.value == 1)
      }
    }

    /// One worker running a gated task (`head`) with a `LeaveMark` task handed to it behind
    /// that one (`behind`), the gate reached.
    static func withATaskQueuedBehindAnother(
      _ body: (_ head: ProcessFuture<Int>, _ behind: ProcessFuture<Int>, _ gate: TestGate, _ marks: String) async throws
        -> Void
    ) async throws {
      let path = temporaryPath("cancel-mark")
      defer { unlink(path) }
      var configuration = ProcessPoolExecutor.Configuration.workers(1)
      configuration.jobsPerWorker = 2
      configuration.adaptivePipelining = false
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let head = try pool.submit(gate.task, 1)
        let behind = try pool.submit(LeaveMark(path: path), 2)
        #expect(await gate.waitForArrivals(1))
        #expect(behind.isRunning)  // handed to the worker, behind the head
        try await body(head, behind, gate, path)
      }
    }

    @Test func cancellingATaskQueuedBehindAnotherOnItsWorkerReturnsFalseAndItRunsOnce() async throws {
      try await Self.withATaskQueuedBehindAnother { (head, behind, gate, path) async throws in
        // It cannot be stopped without stopping the head: not reported cancelled.
        #expect(behind.cancel(terminatingWorker: true) == false)
        #expect(!behind.isCancelled)
        gate.open()
        #expect(try await head.value == 1)
        #expect(try await behind.value == 2)
        #expect(marks(path) == ["2"])
      }
    }

    @Test func cancellingTheRunningTaskStopsItsWorkerAndTheOneBehindRunsOnce() async throws {
      try await Self.withATaskQueuedBehindAnother { (head, behind, gate, path) async throws in
        #expect(head.cancel(terminatingWorker: true))
        #expect(head.isCancelled)
        await #expect { try await head.value } throws: { ($0 as? ProcessPoolError)?.code == .cancelled }
        #expect(try await behind.value == 2)
        #expect(marks(path) == ["2"])
      }
    }

    @Test func droppingThePoolWhileAMapIsUnreadShutsItDownAndTheResultsStillCome() async throws {
      // CPython's test_del_shutdown: the map's iterator does not keep the executor.
      let check = LeakCheck()
      var pool: ProcessPoolExecutor? = try ProcessPoolExecutor(maxWorkers: 2)
      let results = try pool!.map(Absolute(), -5..<5, chunksize: 2)
      weak let weakPool = pool
      let core = pool!.core
      pool = nil
      #expect(weakPool == nil)
      // Every worker exits and is reaped, while the results are still unread.
      await core.waitUntilStopped()
      core.waitForIOThread()
      var values: [Int] = []
      for try await value in results { values.append(value) }
      #expect(values == (-5..<5).map(abs))
      check.verify()
    }

    @Test func aMapDoesNotKeepTheOutputsItHasYielded() async throws {
      // CPython's test_free_reference.
      try await withPool(.workers(2)) { (pool: ProcessPoolExecutor) async throws in
        var iterator = try pool.map(MakeDummyObject(), 0..<10, chunksize: 5).makeAsyncIterator()
        var seen = 0
        while true {
          weak var watched: DummyObject?
          do {
            guard let object = try await iterator.next() else { break }
            #expect(object.value == seen)
            watched = object
          }
          #expect(watched == nil, "output \(seen) is still referenced by the map")
          seen += 1
        }
        #expect(seen == 10)
      }
    }

    // MARK: Lifecycle

    @Test func aWorkerDyingInItsInitializerIsAFailedStartAndNoTaskIsBlamed() async throws {
      try await withPool(.workers(1), initializer: ExitingInitializer()) { (pool: ProcessPoolExecutor) async throws in
        let futures = try (0..<5).map { try pool.submit(Square(), $0) }
        for future in futures {
          await #expect { try await future.value } throws: {
            let error = $0 as? ProcessPoolError
            return error?.code == .brokenPool && "\(error!)".contains("initializer")
              && "\(error!)".contains("exit code 3")
          }
        }
        let statistics = pool.statistics
        #expect(statistics.workersFailedToStart == 3)
        #expect(statistics.workersStarted == 3)
        #expect(statistics.tasksCompleted == 0)
      }
    }

    @Test func theTaskTimeoutDoesNotIncludeTheInitializer() async throws {
      var configuration = ProcessPoolExecutor.Configuration.workers(1)
      configuration.taskTimeout = .milliseconds(500)
      try await withPool(configuration, initializer: SlowInitializer(milliseconds: 1500)) {
        (pool: ProcessPoolExecutor) async throws in
        #expect(try await pool.submit(Square(), 6).value == 36)
      }
    }

    @Test func aWorkerKilledBeforeItsHelloBreaksAPoolWithBreakPool() async throws {
      // CPython's test_killed_child.
      var configuration = ProcessPoolExecutor.Configuration.workers(1)
      configuration.crashPolicy = .breakPool
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let future = try pool.submit(Sleep(), 3_000)
        // As soon as it exists (the pool's I/O thread spawns it), most likely before its hello.
        while pool.workerPIDs.isEmpty { await Task.yield() }
        kill(pool.workerPIDs[0], SIGKILL)
        await #expect(throws: ProcessPoolError.self) { try await future.value }
        #expect { try pool.submit(Square(), 2) } throws: { ($0 as? ProcessPoolError)?.code == .brokenPool }
      }
    }

    @Test func aForgedInitializerFrameKillsOnlyThatWorker() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(ForgeInitializerFailure(), 0).value } throws: {
          ($0 as? ProcessPoolError)?.code == .protocolViolation
        }
        #expect(try await pool.submit(Square(), 7).value == 49)
      }
    }

    @Test func aPoolNearTheDescriptorLimitRunsWithTheWorkersItHas() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        #expect(try await pool.submit(MapNearTheDescriptorLimit(), 0).value == 24)
      }
    }

    @Test func withSIGCHLDIgnoredACrashReportsAnUnknownStatusNotAMadeUpCode() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let text = try await pool.submit(CrashWithSIGCHLDIgnored(), 1).value
        #expect(text.hasPrefix("workerCrashed nil"), "\(text)")
        #expect(text.contains("SIGCHLD") && !text.contains("-1"), "\(text)")
      }
    }

    @Test func withSIGCHLDIgnoredAForkedWorkersCrashStillHasItsStatus() async throws {
      // The fork server is the worker's parent and reaps it: this process's SIGCHLD does not matter.
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let text = try await pool.submit(CrashWithSIGCHLDIgnored(), 0).value
        #expect(text.hasPrefix("workerCrashed exit code 99"), "\(text)")
      }
    }
  }
}
