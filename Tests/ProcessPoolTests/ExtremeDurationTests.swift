import Testing

@testable import ProcessPool

/// Issue 19, item 8: no duration a caller can pass traps the parent. Durations too long to
/// measure (`.seconds(Int64.max)`, 1e16 s) mean no limit; a zero or negative wait only polls; a
/// zero or negative task time limit is an `invalidArgument` at the call site.
extension WorkerProcessTests {
  @Suite struct ExtremeDurationTests {
    static let huge: [Duration] = [.seconds(Int64.max), .seconds(1e16)]
    static let notPositive: [Duration] = [.zero, .seconds(-1), .zero - .seconds(Int64.max)]

    @Test(arguments: huge)
    func hugeTaskLimitsAndGracePeriodMeanNoLimit(_ limit: Duration) async throws {
      var configuration = ProcessPoolExecutor.Configuration.workers(1)
      configuration.taskTimeout = limit
      configuration.terminationGracePeriod = limit
      let gate = TestGate()
      defer { gate.close() }
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        #expect(try await pool.submit(Square(), 3).value == 9)
        #expect(try await pool.submit(Square(), 4, timeout: limit).value == 16)
        // Stopping a running task sends SIGTERM and arms the grace period's deadline.
        let running = try pool.submit(gate.task, 1, timeout: limit)
        #expect(await gate.waitForArrivals(1))
        #expect(running.cancel(terminatingWorker: true))
        await #expect(throws: ProcessPoolError.self) { _ = try await running.value }
        gate.open()
        #expect(try await pool.submit(Square(), 5, timeout: limit).value == 25)
      }
    }

    @Test(arguments: huge)
    func hugeWaitsWaitForTheResult(_ limit: Duration) async throws {
      let gate = TestGate()
      defer { gate.close() }
      // One job per worker: the two gated tasks run at once, never one queued behind the other.
      var configuration = ProcessPoolExecutor.Configuration.workers(2)
      configuration.jobsPerWorker = 1
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        // result(timeout:) and error(timeout:) sleep on a condition variable until the gate opens.
        let first = try pool.submit(gate.task, 1)
        let second = try pool.submit(gate.task, 2)
        #expect(await gate.waitForArrivals(2))
        async let firstResult = onThread { Result { try first.result(timeout: limit) } }
        async let secondError = onThread { Result { try second.error(timeout: limit) } }
        gate.open()
        #expect(try await firstResult.get() == 1)
        #expect(try await secondError.get() == nil)

        // The async waits sleep on a clock until the gate opens.
        let futures = try (1...2).map { try pool.submit(gate.task, $0) }
        #expect(await gate.waitForArrivals(2))
        async let waited = wait(futures, timeout: limit)
        async let completed = Self.collect(asCompleted(futures, timeout: limit))
        async let mapped = Self.collect(try pool.map(gate.task, [3, 4], chunksize: 1, timeout: limit))
        gate.open()
        // The map's tasks queue behind the first two.
        #expect(await gate.waitForArrivals(2))
        gate.open()
        #expect(await waited.notDone.isEmpty)
        #expect(try await completed.count == 2)
        #expect(try await mapped == [3, 4])
      }
    }

    @Test(arguments: notPositive)
    func taskLimitsMustBePositive(_ limit: Duration) async throws {
      var configuration = ProcessPoolExecutor.Configuration.workers(1)
      configuration.taskTimeout = limit
      #expect(Self.code { try ProcessPoolExecutor(configuration: configuration) } == .invalidArgument)
      configuration = .workers(1)
      configuration.terminationGracePeriod = limit
      #expect(Self.code { try ProcessPoolExecutor(configuration: configuration) } == .invalidArgument)
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        #expect(Self.code { try pool.submit(Square(), 2, timeout: limit) } == .invalidArgument)
        #expect(try await pool.submit(Square(), 2).value == 4)
      }
    }

    @Test(arguments: notPositive)
    func waitsOfZeroOrLessOnlyPoll(_ limit: Duration) async throws {
      let gate = TestGate()
      defer { gate.close() }
      try await withPool(.workers(2)) { (pool: ProcessPoolExecutor) async throws in
        let done = try pool.submit(Square(), 3)
        _ = try await done.value
        let blocked = try pool.submit(gate.task, 1)
        #expect(await gate.waitForArrivals(1))

        try Self.pollBlocking(done: done, blocked: blocked, limit)

        let (finished, unfinished) = await wait([done, blocked], timeout: limit)
        #expect(finished == [done] && unfinished == [blocked])

        var iterator = asCompleted([blocked, done], timeout: limit).makeAsyncIterator()
        #expect(try await iterator.next() == done)
        await #expect(throws: ProcessPoolError(.timedOut, "1 (of 2) futures unfinished")) {
          _ = try await iterator.next()
        }

        var mapped = try pool.map(gate.task, [2], timeout: limit).makeAsyncIterator()
        await #expect(throws: ProcessPoolError.self) { _ = try await mapped.next() }
        // Releases `blocked` and the map's task, which may or may not have started.
        gate.close()
        #expect(try await blocked.value == 1)
      }
    }

    /// `result(timeout:)` and `error(timeout:)` (unavailable in async code) of a finished and an
    /// unfinished future.
    static func pollBlocking(done: ProcessFuture<Int>, blocked: ProcessFuture<Int>, _ limit: Duration) throws {
      #expect(try done.result(timeout: limit) == 9)
      #expect(try done.error(timeout: limit) == nil)
      #expect(code { try blocked.result(timeout: limit) } == .timedOut)
      #expect(code { try blocked.error(timeout: limit) } == .timedOut)
    }

    static func code(_ body: () throws -> some Any) -> ProcessPoolError.Code? {
      do {
        _ = try body()
        return nil
      } catch {
        return (error as? ProcessPoolError)?.code
      }
    }

    static func collect<S: AsyncSequence>(_ sequence: S) async throws -> [S.Element] {
      var elements: [S.Element] = []
      for try await element in sequence { elements.append(element) }
      return elements
    }
  }
}

/// Runs a blocking call on a thread of its own (not on the two-thread cooperative pool).
func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
  await withCheckedContinuation { (continuation: CheckedContinuation<T, Never>) in
    do {
      try OSThread.start(name: "test-blocking") { continuation.resume(returning: body()) }
    } catch {
      fatalError("cannot start a thread: \(error)")
    }
  }
}
