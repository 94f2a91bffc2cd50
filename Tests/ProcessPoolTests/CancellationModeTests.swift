import Synchronization
import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// `CancellationMode.terminatingWorker`: cancelling the Swift task that awaits a future, or
/// that iterates a map, stops the running work; the default leaves it to finish.
extension WorkerProcessTests {
  @Suite struct CancellationModeTests {
    /// Cancels `consumer` once `count` tasks are held at `gate`, and checks that it ended cancelled.
    static func cancel<T>(_ consumer: Task<T, any Error>, after count: Int, at gate: TestGate) async {
      #expect(await gate.waitForArrivals(count))
      consumer.cancel()
      await #expect { try await consumer.value } throws: {
        $0 is CancellationError || ($0 as? ProcessPoolError)?.code == .cancelled
      }
    }

    @Test func valueCancellingTerminatingWorkerStopsTheRunningTask() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let future = try pool.submit(gate.task, 1)
        let consumer = Task { try await future.value(cancelling: .terminatingWorker) }
        #expect(await gate.waitForArrivals(1))
        let pid = try #require(pool.workerPIDs.first)
        await Self.cancel(consumer, after: 0, at: gate)
        #expect(future.isCancelled)
        // The held worker was stopped: a new one runs the next task (the gate is still shut).
        #expect(try await pool.submit(Square(), 5).value == 25)
        #expect(!pool.workerPIDs.contains(pid))
        #expect(pool.statistics.workersStopped == 1)
      }
    }

    @Test func theDefaultLeavesTheRunningTaskToFinish() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let future = try pool.submit(gate.task, 1)
        await Self.cancel(Task { try await future.value }, after: 1, at: gate)
        #expect(!future.isCancelled)
        gate.open()
        #expect(try await future.value == 1)
        #expect(pool.statistics.workersStopped == 0)
      }
    }

    @Test func aPoolSettingAppliesToEveryFutureAndMap() async throws {
      var configuration = ProcessPoolExecutor.Configuration.workers(2)
      configuration.cancellation = .terminatingWorker
      configuration.jobsPerWorker = 1
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let future = try pool.submit(gate.task, 1)
        await Self.cancel(Task { try await future.value }, after: 1, at: gate)
        #expect(future.isCancelled)

        // A map whose consumer is cancelled with both chunks running at the gate.
        let sequence = try pool.map(gate.task, [1, 2], chunksize: 1)
        await Self.cancel(
          Task {
            var seen = 0
            for try await _ in sequence { seen += 1 }
            return seen
          }, after: 2, at: gate)
        // Both held workers were stopped: new ones run this while the gate stays shut.
        let (done, _) = await wait([try pool.submit(Square(), 4)], timeout: .seconds(60))
        #expect(try await done.first?.value == 16)
        // Every worker reaped (a held one would keep this waiting): the stops are all counted.
        await pool.shutdown()
        #expect(pool.statistics.workersStopped == 3)
      }
    }

    @Test func anUnorderedMapLeftEarlyStopsItsRunningChunks() async throws {
      var configuration = ProcessPoolExecutor.Configuration.workers(2)
      configuration.cancellation = .terminatingWorker
      configuration.jobsPerWorker = 1
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        var iterator = try pool.mapUnordered(HoldAt(path: gate.path, at: 0), 0..<3, chunksize: 1)
          .makeAsyncIterator()
        #expect(await gate.waitForArrivals(1))
        // Items 1 and 2 finish; 0 is held. Dropping the iterator stops it.
        var indices: Set<Int> = []
        for _ in 0..<2 { indices.insert(try #require(try await iterator.next()).index) }
        #expect(indices == [1, 2])
        iterator = try pool.mapUnordered(Square(), [Int]()).makeAsyncIterator()
        let (done, _) = await wait([try pool.submit(Square(), 4)], timeout: .seconds(60))
        #expect(try await done.first?.value == 16)
        await pool.shutdown()
        #expect(pool.statistics.workersStopped == 1)
      }
    }
  }
}
