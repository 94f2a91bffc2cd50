import Synchronization
import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// The executor core with real worker processes: CPython's executor.py, test_process_pool.py
/// and test_shutdown.py cases that apply, plus our own. Serialized: each test checks that it
/// leaves no child process and no descriptor behind.
extension WorkerProcessTests {
  @Suite struct ExecutorTests {
    @Test func submit() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        #expect(try await pool.submit(Square(), 16).value == 256)
        #expect(try await pool.submit(Multiply(factor: 3), 7).value == 21)
      }
    }

    @Test func processVoidStandsInForVoidBothWays() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        #expect(try await pool.submit(NoInputNoOutput()).value == ProcessVoid())
        await #expect(throws: GateError.self) { try await pool.submit(NoInputNoOutput(fail: true)).value }
        var count = 0
        for try await nothing in try pool.map(Discard(), 0..<10, chunksize: 3) {
          #expect("\(nothing)" == "()")
          count += 1
        }
        #expect(count == 10)
      }
    }

    @Test func fieldsNamedLikeSubmitParametersRoundTrip() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let arguments = Capture.Arguments(fn: 3, self: 2)
        #expect(try await pool.submit(Capture(), arguments).value == arguments)
      }
    }

    @Test func runsInAnotherProcess() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let pid = try await pool.submit(ProcessID(), 0).value
        #expect(pid != getpid())
        #expect(pool.workerPIDs.contains(pid))
      }
    }

    @Test func programsATaskStartsDoNotInheritTheWorkerSocket() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        #expect(try await pool.submit(SocketIsCloseOnExec(), 0).value)
      }
    }

    @Test func maxWorkersMustBePositive() {
      for count in [0, -1] {
        #expect { try ProcessPoolExecutor(maxWorkers: count) } throws: {
          ($0 as? ProcessPoolError)?.code == .invalidArgument
            && "\($0)".contains("maxWorkers must be greater than 0")
        }
      }
    }

    @Test func defaultMaxWorkersIsTheUsableCPUCount() throws {
      let pool = try ProcessPoolExecutor()
      #expect(pool.configuration.maxWorkers >= 1)
    }

    @Test func codableErrorComesBackAsItself() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        await #expect(throws: DivisionByZero(dividend: 5)) { try await pool.submit(Divide(divisor: 0), 5).value }
        #expect(try await pool.submit(Divide(divisor: 2), 10).value == 5)
      }
    }

    @Test func otherErrorsComeBackAsRemoteErrors() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let future = try pool.submit(Fail(), 0)
        do {
          _ = try await future.value
          Issue.record("expected an error")
        } catch let error as ProcessPoolError {
          #expect(error.code == .remote)
          #expect(error.message == "this is an exception")
          #expect(error.remoteTypeName?.hasSuffix("OpaqueFailure") == true)
          #expect(error.workerPID != nil && error.workerPID != getpid())
        }
        // An error with an empty description still propagates (gh-132063).
        await #expect { try await pool.submit(Fail(silent: true), 0).value } throws: {
          ($0 as? ProcessPoolError)?.remoteTypeName?.hasSuffix("SilentFailure") == true
        }
      }
    }

    @Test func privateTaskTypesAreRejectedAtSubmit() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        // The message names the type as written, not the runtime's private-context marker.
        #expect { try pool.submit(PrivateTask(), 1) } throws: {
          ($0 as? ProcessPoolError)?.code == .unknownTaskType
            && ($0 as? ProcessPoolError)?.message.hasPrefix("ProcessPoolTests.PrivateTask cannot be found") == true
            && !"\($0)".contains("unknown context")
        }
        struct LocalTask: ProcessTask {
          func run(_ x: Int) async throws -> Int { x }
        }
        #expect { try pool.submit(LocalTask(), 1) } throws: {
          ($0 as? ProcessPoolError)?.code == .unknownTaskType
            && ($0 as? ProcessPoolError)?.message.contains("LocalTask cannot be found") == true
            && !"\($0)".contains("unknown context") && !"\($0)".contains("#1")
        }
        #expect(TaskTypeRegistry.writtenName([Square].self) == "Swift.Array<ProcessPoolTests.Square>")
        // The pool is fine afterwards.
        #expect(try await pool.submit(Square(), 3).value == 9)
      }
    }

    @Test func unencodableInputFailsAtTheCallSite() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        #expect { try pool.submit(TakeUnencodable(), Unencodable()) } throws: {
          ($0 as? ProcessPoolError)?.code == .encodingFailed
        }
        #expect(try await pool.submit(Square(), 4).value == 16)
      }
    }

    @Test func unencodableOutputFailsOnlyItsFuture() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(ReturnUnencodable(), 0).value } throws: {
          ($0 as? ProcessPoolError)?.code == .encodingFailed
        }
        #expect(try await pool.submit(Square(), 5).value == 25)
      }
    }

    @Test func largePayloadsRoundTrip() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        var big = [UInt8](repeating: 0xA5, count: 32 << 20)
        for index in stride(from: 0, to: big.count, by: 4093) { big[index] = UInt8(truncatingIfNeeded: index) }
        let back = try await pool.submit(Echo(), big).value
        // Compared outside #expect, which would describe both 32 MiB operands.
        let same = back == big
        #expect(same)
        // CPython's PIPE_MAX_SIZE: 4 MiB + 1.
        let odd = [UInt8](repeating: 7, count: 4 * 1024 * 1024 + 1)
        let oddBack = try await pool.submit(Echo(), odd).value
        let oddSame = oddBack == odd
        #expect(oddSame)
      }
    }

    @Test func resultsOfEverySizeArriveInOrder() async throws {
      // A local worker's results go through memory shared with the parent, and those too big
      // for it through the socket; the parent must take them in the order the jobs ran. Many
      // medium results go round the shared ring several times.
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let mixed = (0..<12).flatMap { round in Array(repeating: round, count: 16) + [300_000 + round] }
        let sizes = [0, 1 << 20, 1 << 20] + mixed + Array(repeating: 1000, count: 2500)
        var position = 0
        var wrong: [Int] = []
        for try await bytes in try pool.map(MakeBytes(), sizes, chunksize: 1) {
          if bytes != MakeBytes.expected(sizes[position]) { wrong.append(position) }
          position += 1
        }
        #expect(position == sizes.count)
        #expect(wrong.isEmpty)
      }
    }

    @Test func blockingResultAndError() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let future = try pool.submit(Square(), 12)
        #expect(try blockingResult(future) == 144)
        let failing = try pool.submit(Divide(divisor: 0), 1)
        #expect(try blockingError(failing) is DivisionByZero)
      }
    }

    @Test func saturationNeverExceedsMaxWorkers() async throws {
      // One job per worker at a time, so every round releases exactly three gated tasks.
      var configuration = ProcessPoolExecutor.Configuration.workers(3)
      configuration.jobsPerWorker = 1
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let futures = try (0..<15).map { try pool.submit(gate.task, $0) }
        #expect(await gate.waitForArrivals(3))
        #expect(pool.workerPIDs.count == 3)
        #expect(pool.statistics.workersStarted == 3)
        // Each worker holds one gated task at a time: five rounds of three.
        for _ in 0..<4 {
          gate.open()
          #expect(await gate.waitForArrivals(3))
          #expect(pool.workerPIDs.count == 3)
        }
        gate.open()
        var results: [Int] = []
        for future in futures { results.append(try await future.value) }
        #expect(results == Array(0..<15))
        #expect(pool.statistics.workersStarted == 3)
      }
    }

    @Test func idleWorkerIsReused() async throws {
      try await withPool(.workers(5)) { (pool: ProcessPoolExecutor) async throws in
        #expect(try await pool.submit(Multiply(factor: 2), 21).value == 42)
        #expect(try await pool.submit(Multiply(factor: 7), 6).value == 42)
        #expect(try await pool.submit(Multiply(factor: 14), 3).value == 42)
        #expect(pool.statistics.workersStarted == 1)
      }
    }

    @Test func idleWorkersAreReusedWithFireAndForget() async throws {
      try await withPool(.workers(5)) { (pool: ProcessPoolExecutor) async throws in
        for round in 0..<3 {
          #expect(try await pool.submit(Multiply(factor: 2), round).value == round * 2)
          _ = try pool.submit(Multiply(factor: 2), round)
        }
        #expect(pool.statistics.workersStarted <= 3)
      }
    }

    @Test func submitAfterShutdownThrows() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        await pool.shutdown()
        #expect { try pool.submit(Square(), 2) } throws: {
          ($0 as? ProcessPoolError)?.code == .shutDown && "\($0)".contains("after shutdown")
        }
      }
    }

    @Test func shutdownWaitsForAllWork() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let futures = try (0..<50).map { try pool.submit(Sleep(), $0 % 3) }
        await pool.shutdown(wait: true)
        #expect(futures.allSatisfy { $0.isDone })
        for (index, future) in futures.enumerated() { #expect(try await future.value == index % 3) }
        #expect(pool.workerPIDs.isEmpty)
        #expect(LeakCheck.workerProcesses().isEmpty)
      }
    }

    @Test func shutdownCancelsFuturesThatHaveNotStarted() async throws {
      try await withPool(.workers(2)) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let blockers = try (0..<2).map { try pool.submit(gate.task, $0) }
        #expect(await gate.waitForArrivals(2))
        let queued = try (0..<30).map { try pool.submit(Square(), $0) }
        let shutdown = Task { await pool.shutdown(wait: true, cancelFutures: true) }
        // Whatever was handed to a worker runs; the rest is cancelled.
        while !queued.allSatisfy({ $0.isCancelled || $0.isRunning || $0.isDone }) { await Task.yield() }
        gate.open()
        await shutdown.value
        let cancelled = queued.filter(\.isCancelled).count
        #expect(cancelled > 20)
        for future in queued where !future.isCancelled { #expect(future.isDone) }
        for future in blockers { _ = try await future.value }
      }
    }

    @Test func cancelPendingThenShutdownDoesNotHang() async throws {
      // gh-94440: submit, result, then submit+cancel, then shutdown(wait: true).
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        _ = try await pool.submit(Square(), 1).value
        let future = try pool.submit(Square(), 2)
        _ = future.cancel()
        await pool.shutdown(wait: true)
        #expect(future.isDone)
      }
    }

    @Test func droppingThePoolFinishesPendingWork() async throws {
      let check = LeakCheck()
      var futures: [ProcessFuture<Int>] = []
      var core: PoolCore?
      do {
        let pool = try ProcessPoolExecutor(maxWorkers: 2)
        futures = try (-5..<5).map { try pool.submit(Multiply(factor: -1), $0) }
        core = pool.core
      }
      var results: [Int] = []
      for future in futures { results.append(try await future.value) }
      #expect(results == [5, 4, 3, 2, 1, 0, -1, -2, -3, -4])
      await core?.waitUntilStopped()
      core?.waitForIOThread()
      core = nil
      check.verify()
    }

    @Test func shutdownWithoutWaitStillFinishes() async throws {
      let check = LeakCheck()
      let pool = try ProcessPoolExecutor(maxWorkers: 2)
      let futures = try (0..<10).map { try pool.submit(Square(), $0) }
      await pool.shutdown(wait: false)
      for (index, future) in futures.enumerated() { #expect(try await future.value == index * index) }
      await pool.core.waitUntilStopped()
      pool.core.waitForIOThread()
      check.verify()
    }

    @Test func processesTerminateAfterShutdown() async throws {
      try await withPool(.workers(3)) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let futures = try (0..<3).map { try pool.submit(gate.task, $0) }
        #expect(await gate.waitForArrivals(3))
        let pids = pool.workerPIDs
        #expect(pids.count == 3)
        gate.open()
        for future in futures { _ = try await future.value }
        await pool.shutdown()
        for pid in pids { #expect(kill(pid, 0) == -1 && errno == ESRCH) }
      }
    }
  }
}

/// The blocking API, called from a synchronous context as a user's thread would.
private func blockingResult(_ future: ProcessFuture<Int>) throws -> Int {
  try future.result(timeout: .seconds(60))
}

private func blockingError(_ future: ProcessFuture<Int>) throws -> (any Error)? {
  try future.error(timeout: .seconds(60))
}

private struct PrivateTask: ProcessTask {
  func run(_ x: Int) async throws -> Int { x }
}
