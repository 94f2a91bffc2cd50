import Synchronization
import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// `withProcessPool`: the pool is shut down however the body ends, and a cancelled enclosing
/// task stops the running work. Each test checks that no process or descriptor is left.
private struct BodyFailed: Error, Equatable {}

extension WorkerProcessTests {
  @Suite struct ScopedPoolTests {
    @Test func bodyReturnsAfterQueuedWorkFinishedAndWorkersExited() async throws {
      let check = LeakCheck()
      let escaped = Mutex<ProcessPoolExecutor?>(nil)
      // Futures left unawaited by the body still finish: the shutdown waits for them.
      let futures = try await withProcessPool(maxWorkers: 2) { pool in
        escaped.withLock { $0 = pool }
        return try (0..<8).map { try pool.submit(Square(), $0) }
      }
      #expect(futures.allSatisfy { $0.isDone })
      var values: [Int] = []
      for future in futures { values.append(try await future.value) }
      #expect(values == (0..<8).map { $0 * $0 })
      let pool = try #require(escaped.withLock { $0 })
      #expect(throws: ProcessPoolError.self) { try pool.submit(Square(), 1) }
      #expect(pool.workerPIDs.isEmpty)
      check.verify()
    }

    @Test func configurationFormAndInitializerApply() async throws {
      let check = LeakCheck()
      var configuration = ProcessPoolExecutor.Configuration()
      configuration.maxWorkers = 1
      let greeting = try await withProcessPool(
        configuration: configuration, initializer: SetGreeting(greeting: "hello")
      ) { pool in
        try await pool.submit(ReadGreeting(), 0).value
      }
      #expect(greeting == "hello")
      check.verify()
    }

    @Test func bodyThrowsAndThePoolIsStillShutDown() async throws {
      let check = LeakCheck()
      // The gate closes before the check: its sockets are the test's own.
      do {
        let gate = TestGate()
        defer { gate.close() }
        let escaped = Mutex<(ProcessPoolExecutor, ProcessFuture<Int>, ProcessFuture<Int>)?>(nil)
        await #expect(throws: BodyFailed()) {
          try await withProcessPool(maxWorkers: 1) { pool in
            // One task runs (held at the gate), one waits behind it.
            let running = try pool.submit(gate.task, 1)
            #expect(await gate.waitForArrivals(1))
            let queued = try pool.submit(Square(), 3)
            escaped.withLock { $0 = (pool, running, queued) }
            // Let the running task finish while the pool shuts down.
            gate.open()
            throw BodyFailed()
          }
        }
        let (pool, running, queued) = try #require(escaped.withLock { $0 })
        // Running work finishes; what had not started may have been cancelled.
        #expect(try await running.value == 1)
        #expect(queued.isDone)
        #expect(throws: ProcessPoolError.self) { try pool.submit(Square(), 1) }
      }
      check.verify()
    }

    @Test func cancellingTheEnclosingTaskStopsRunningWork() async throws {
      let check = LeakCheck()
      // The gate closes before the check: its sockets are the test's own.
      do {
        let gate = TestGate()
        defer { gate.close() }
        let submitted = Mutex<(ProcessFuture<Int>, Int32)?>(nil)
        let task = Task {
          try await withProcessPool(maxWorkers: 1) { pool in
            let future = try pool.submit(gate.task, 1)
            #expect(await gate.waitForArrivals(1))
            submitted.withLock { $0 = (future, pool.workerPIDs[0]) }
            // Never opened: only cancellation ends this.
            return try await future.value
          }
        }
        while submitted.withLock({ $0 == nil }) { await Task.yield() }
        task.cancel()
        // The body's await ends with the task's cancellation or with the future's: either way, cancelled.
        await #expect { try await task.value } throws: {
          $0 is CancellationError || ($0 as? ProcessPoolError)?.code == .cancelled
        }
        let (future, pid) = try #require(submitted.withLock { $0 })
        #expect(future.isDone)
        await #expect { try await future.value } throws: {
          ($0 as? ProcessPoolError)?.code == .cancelled && ($0 as? ProcessPoolError)?.workerPID == pid
        }
        // The worker was stopped and reaped: nothing is left.
        #expect(kill(pid, 0) == -1)
      }
      check.verify()
    }
  }
}
