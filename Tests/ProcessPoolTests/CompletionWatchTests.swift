import Testing

@testable import ProcessPool

/// Several waits on the same futures at once (two `asCompleted`, `wait`, a `map` with a
/// timeout): each is told of every completion. They once shared watcher ids, so the one that
/// registered first was never woken.
extension WorkerProcessTests {
  @Suite struct CompletionWatchTests {
    @Test func twoAsCompletedOnTheSameFuturesBothSeeEveryCompletion() async throws {
      let gate = TestGate()
      defer { gate.close() }
      var configuration = ProcessPoolExecutor.Configuration.workers(2)
      configuration.jobsPerWorker = 1
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let futures = try (1...2).map { try pool.submit(gate.task, $0) }
        #expect(await gate.waitForArrivals(2))
        // Both start watching when they are made, before anything completes. The timeout only
        // turns a lost wake-up into a failure instead of a hang.
        let first = asCompleted(futures, timeout: .seconds(60))
        let second = asCompleted(futures, timeout: .seconds(60))
        gate.open()
        #expect(try await Self.count(first) == 2)
        #expect(try await Self.count(second) == 2)
      }
    }

    static func count(_ sequence: AsCompletedSequence<Int>) async throws -> Int {
      var count = 0
      for try await _ in sequence { count += 1 }
      return count
    }
  }
}
