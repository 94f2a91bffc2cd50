import Testing

@testable import ProcessPool

/// `AnyProcessFuture`: futures of different output types in one `asCompleted` or `wait`.
extension WorkerProcessTests {
  @Suite struct MixedFutureTests {
    @Test func asCompletedYieldsFuturesOfDifferentOutputTypes() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let square: ProcessFuture<Int> = try pool.submit(Square(), 7)
        let text: ProcessFuture<String> = try pool.submit(Describe(), 42)
        let futures = [AnyProcessFuture(square), AnyProcessFuture(text), AnyProcessFuture(square)]
        var ints: [Int] = []
        var strings: [String] = []
        for try await future in asCompleted(futures) {
          #expect(future.isDone)
          if let typed = future.typed(as: Int.self) {
            #expect(typed === square)
            ints.append(try await typed.value)
          } else if let typed = future.typed(as: String.self) {
            strings.append(try await typed.value)
            #expect(future.outputType is String.Type)
            #expect(try await future.value as? String == "42")
          } else {
            Issue.record("an unexpected future: \(future)")
          }
        }
        // The duplicate is yielded once.
        #expect(ints == [49])
        #expect(strings == ["42"])
      }
    }

    @Test func waitPartitionsFuturesOfDifferentOutputTypes() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let blocked: ProcessFuture<Int> = try pool.submit(gate.task, 1)
        #expect(await gate.waitForArrivals(1))
        let failing: ProcessFuture<Int> = try pool.submit(Fail(), 0)
        let text: ProcessFuture<String> = try pool.submit(Describe(), 3)
        let futures = [AnyProcessFuture(blocked), AnyProcessFuture(failing), AnyProcessFuture(text)]
        var (done, notDone) = await wait(futures, timeout: .milliseconds(50))
        #expect(done.isEmpty && notDone.count == 3)
        gate.open()
        (done, notDone) = await wait(futures, returnWhen: .allCompleted)
        #expect(done == Set(futures) && notDone.isEmpty)
        #expect(done.contains(AnyProcessFuture(text)))
        // The typed form is unchanged.
        let (typedDone, _) = await wait([blocked, failing])
        #expect(typedDone == [blocked, failing])
        await #expect(throws: (any Error).self) { try await AnyProcessFuture(failing).value }
      }
    }

    @Test func cancellingThroughTheWrapper() async throws {
      // One job per worker: the second task waits in the pool's queue, where it can be cancelled.
      var configuration = ProcessPoolExecutor.Configuration.workers(1)
      configuration.jobsPerWorker = 1
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let blocked = AnyProcessFuture(try pool.submit(gate.task, 1))
        #expect(await gate.waitForArrivals(1))
        let queued = AnyProcessFuture(try pool.submit(Describe(), 2))
        #expect(queued.cancel())
        #expect(queued.isCancelled && !blocked.isDone)
        #expect(blocked.cancel(terminatingWorker: true))
        #expect(blocked.isCancelled)
        let (done, _) = await wait([blocked, queued])
        #expect(done.count == 2)
      }
    }
  }
}
