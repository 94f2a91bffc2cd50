import Synchronization
import Testing

@testable import ProcessPool

/// `map`, `asCompleted` and `wait` with real workers: CPython's executor.py (map),
/// test_as_completed.py and test_wait.py cases.
extension WorkerProcessTests {
  @Suite struct CollectionTests {
    /// Collects a map, recording thrown errors in place and going on (Python main's semantics).
    static func collect<Output>(_ sequence: ProcessMapSequence<Output>) async -> [Result<Output, any Error>] {
      var iterator = sequence.makeAsyncIterator()
      var results: [Result<Output, any Error>] = []
      while true {
        do {
          guard let value = try await iterator.next() else { break }
          results.append(.success(value))
        } catch {
          results.append(.failure(error))
        }
      }
      return results
    }

    @Test(arguments: [nil, 1, 3, 6, 40, 50])
    func mapIsInInputOrder(_ chunksize: Int?) async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        var results: [Int] = []
        for try await value in try pool.map(Square(), 0..<40, chunksize: chunksize) { results.append(value) }
        #expect(results == (0..<40).map { $0 * $0 })
      }
    }

    @Test func invalidChunksizeAndBuffersizeThrowAtTheCall() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        for bad in [0, -1] {
          #expect { try pool.map(Square(), [1], chunksize: bad) } throws: {
            ($0 as? ProcessPoolError)?.code == .invalidArgument
          }
          #expect { try pool.map(Square(), [1], buffersize: bad) } throws: {
            ($0 as? ProcessPoolError)?.code == .invalidArgument
              && "\($0)".contains("buffersize must be nil or at least 1 (got \(bad))")
          }
        }
      }
    }

    @Test(arguments: [1, 3])
    func aFailingItemThrowsAtItsPositionAndIterationGoesOn(_ chunksize: Int) async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let inputs = [Pair(a: 5, b: 2), Pair(a: 5, b: 0), Pair(a: 5, b: 3), Pair(a: 5, b: 5)]
        let results = await Self.collect(try pool.map(DivMod(), inputs, chunksize: chunksize))
        #expect(results.count == 4)
        #expect(try results[0].get() == Pair(a: 2, b: 1))
        #expect(throws: DivisionByZero(dividend: 5)) { try results[1].get() }
        #expect(try results[2].get() == Pair(a: 1, b: 2))
        #expect(try results[3].get() == Pair(a: 1, b: 0))
      }
    }

    // 16: a chunk of that many inputs gets a frame of its own; smaller ones share their batch's.
    @Test(arguments: [1, 3, 8, 16])
    func anInputThatCannotBeEncodedFailsAtItsPosition(_ chunksize: Int) async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let values = [-1, 1, 2, -3, 4, -5, -6, 7]
        let sequence = try pool.map(DoubleNonNegative(), values.map(NonNegative.init), chunksize: chunksize)
        let results = await Self.collect(sequence)
        #expect(results.count == values.count)
        #expect(sequence.currentProgress == ProcessPoolProgress(completed: 4, failed: 4, total: 8))
        for (value, result) in zip(values, results) {
          if value < 0 {
            #expect { try result.get() } throws: { ($0 as? ProcessPoolError)?.code == .encodingFailed }
          } else {
            #expect(try result.get() == value * 2)
          }
        }
      }
    }

    @Test(arguments: [nil, Duration.seconds(30)])
    func aTaskThrowingATimeoutIsNotTheMapTimeout(_ timeout: Duration?) async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let results = await Self.collect(try pool.map(TimeoutOnOne(), [0, 1, 2, 3], timeout: timeout))
        #expect(results.count == 4)
        #expect(try results[0].get() == 0)
        #expect(throws: TaskTimeoutError()) { try results[1].get() }
        #expect(try results[2].get() == 2)
        #expect(try results[3].get() == 3)
      }
    }

    @Test func mapTimeoutEndsTheIterationAndCancelsTheRest() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        var iterator = try pool.map(Sleep(), [0, 0, 60_000, 0, 0], chunksize: 1, timeout: .milliseconds(500))
          .makeAsyncIterator()
        var values: [Int] = []
        do {
          while let value = try await iterator.next() { values.append(value) }
          Issue.record("the map must time out")
        } catch let error as ProcessPoolError {
          #expect(error.code == .timedOut)
        }
        #expect(values.count <= 2)
        #expect(try await iterator.next() == nil)
        #expect(try await iterator.next() == nil)
        // The sleeping worker is still busy; shutdown waits for it, so stop it.
        pool.terminateWorkers()
      }
    }

    @Test func breakingOutCancelsPendingWorkAndLeavesThePoolHealthy() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let inputs = [Pair(a: 5, b: 2), Pair(a: 5, b: 0), Pair(a: 5, b: 3), Pair(a: 5, b: 5)]
        for try await first in try pool.map(DivMod(), inputs) {
          #expect(first == Pair(a: 2, b: 1))
          break
        }
        #expect(try await pool.submit(Square(), 7).value == 49)
      }
    }

    @Test(arguments: [1, 2, 4, 8])
    func buffersize(_ size: Int) async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        var results: [String] = []
        for try await value in try pool.map(Describe(), 0..<4, buffersize: size) { results.append(value) }
        #expect(results == ["0", "1", "2", "3"])
        var empty: [String] = []
        for try await value in try pool.map(Describe(), [Int](), buffersize: 2) { empty.append(value) }
        #expect(empty.isEmpty)
      }
    }

    @Test func buffersizeOnAnInfiniteSequence() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let pulled = PulledCounter()
        var results: [String] = []
        for try await value in try pool.map(Describe(), CountingSequence(pulled: pulled), chunksize: 1, buffersize: 2) {
          results.append(value)
          if results.count == 3 { break }
        }
        #expect(results == ["0", "1", "2"])
        #expect(pulled.value <= 5)
      }
    }

    @Test func buffersizeTakesExactlyThatManyWhenNotConsumed() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let pulled = PulledCounter()
        let sequence = try pool.map(Describe(), CountingSequence(pulled: pulled), chunksize: 1, buffersize: 2)
        await pool.shutdown(wait: true)
        #expect(pulled.value == 2)
        _ = sequence
      }
    }

    @Test func automaticChunksize() {
      #expect(ProcessPoolExecutor.automaticChunksize(count: 0, workers: 4) == 1)
      #expect(ProcessPoolExecutor.automaticChunksize(count: 100, workers: 4) == 7)
      #expect(ProcessPoolExecutor.automaticChunksize(count: 16, workers: 4) == 1)
      #expect(ProcessPoolExecutor.automaticChunksize(count: 20_000, workers: 2) == 2500)
    }

    // MARK: asCompleted

    @Test func asCompletedYieldsEveryFuture() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let f1 = try pool.submit(Multiply(factor: 2), 21)
        let f2 = try pool.submit(Multiply(factor: 7), 6)
        let fixtures = [Fixture.cancelledAndNotified(), Fixture.failed(), Fixture.finished(42)]
        var yielded = Set<ProcessFuture<Int>>()
        for try await future in asCompleted([f1, f2] + fixtures) { yielded.insert(future) }
        #expect(yielded == Set([f1, f2] + fixtures))
      }
    }

    @Test func asCompletedTimesOutAfterTheFinishedOnes() async throws {
      for timeout in [Duration.zero, .milliseconds(100)] {
        let pending = ProcessFuture<Int>()
        let done = [Fixture.cancelledAndNotified(), Fixture.failed(), Fixture.finished(42)]
        var yielded: [ProcessFuture<Int>] = []
        do {
          for try await future in asCompleted(done + [pending], timeout: timeout) { yielded.append(future) }
          Issue.record("expected a timeout")
        } catch let error as ProcessPoolError {
          #expect(error.code == .timedOut)
          #expect(error.message == "1 (of 4) futures unfinished")
        }
        #expect(Set(yielded) == Set(done))
      }
    }

    @Test func asCompletedYieldsDuplicatesOnce() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let future = try pool.submit(Sleep(), 10)
        var count = 0
        for try await _ in asCompleted([future, future, future]) { count += 1 }
        #expect(count == 1)
      }
    }

    @Test func asCompletedTimeoutMessage() async throws {
      let running = ProcessFuture<Int>()
      _ = running.setRunningOrNotifyCancel()
      let futures = [Fixture.cancelledAndNotified(), ProcessFuture<Int>(), running, Fixture.finished(1)]
      await #expect { for try await _ in asCompleted(futures, timeout: .zero) {} } throws: {
        ($0 as? ProcessPoolError)?.message == "2 (of 4) futures unfinished"
      }
    }

    @Test func asCompletedKeepsNoReferenceToYieldedFutures() async throws {
      weak var weakFuture: ProcessFuture<Int>?
      let pending = ProcessFuture<Int>()
      var iterator: AsCompletedSequence<Int>.Iterator
      do {
        let finished = Fixture.finished(42)
        weakFuture = finished
        iterator = asCompleted([finished, pending], timeout: .zero).makeAsyncIterator()
      }
      #expect(weakFuture != nil)
      do {
        let yielded = try await iterator.next()
        #expect(yielded === weakFuture)
      }
      #expect(weakFuture == nil, "the sequence still holds a future it has yielded")
      await #expect(throws: ProcessPoolError.self) { try await iterator.next() }
      pending.complete(.success(1))
    }

    @Test func cancellingTheConsumingTaskCancelsTheRest() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let blocker = try pool.submit(gate.task, 0)
        #expect(await gate.waitForArrivals(1))
        let sequence = try pool.map(Square(), 0..<50, chunksize: 1)
        let consumer = Task {
          var seen = 0
          for try await _ in sequence { seen += 1 }
          return seen
        }
        consumer.cancel()
        await #expect(throws: CancellationError.self) { try await consumer.value }
        gate.open()
        _ = try await blocker.value
        // The map's work was cancelled, not run; the pool is healthy.
        #expect(try await pool.submit(Square(), 3).value == 9)
        #expect(pool.statistics.tasksCompleted <= 4)
      }
    }

    @Test func statisticsDoNotCountTheCancelledWorkOfAMapLeftEarly() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let blocker = try pool.submit(gate.task, 0)
        #expect(await gate.waitForArrivals(1))
        do {
          let sequence = try pool.map(Square(), 0..<20, chunksize: 1)
          let statistics = pool.statistics
          // One chunk may wait on the busy worker's socket behind the blocker.
          #expect(statistics.tasksQueued + statistics.tasksRunning == 21)
          _ = sequence
        }
        // The map is gone: its chunks that had not started are cancelled, not queued.
        let statistics = pool.statistics
        #expect(statistics.tasksQueued == 0)
        #expect(statistics.tasksRunning <= 2)
        gate.open()
        #expect(try await blocker.value == 0)
      }
    }

    /// Results of one worker that arrive together (a deep pipeline of tiny tasks) still finish
    /// their futures in the order the worker ran them (only a map's own chunks are taken last
    /// first, which nobody sees).
    @Test func tinyTasksOfOneWorkerCompleteInTheOrderItRanThem() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        // Done-callbacks run in the order the futures finish (after their awaiting tasks are
        // resumed, so the test reads them from a stream, not after `value`).
        let (finished, finishing) = AsyncStream.makeStream(of: Int.self)
        let futures = try (0..<400).map { input in
          let future = try pool.submit(Square(), input)
          future.addDoneCallback { _ in finishing.yield(input) }
          return future
        }
        var order: [Int] = []
        for await input in finished {
          order.append(input)
          if order.count == futures.count { break }
        }
        #expect(order == Array(0..<400))
        for (input, future) in futures.enumerated() { #expect(try await future.value == input * input) }
      }
    }

    @Test func asCompletedAcrossPools() async throws {
      try await withPool(.workers(1)) { (first: ProcessPoolExecutor) async throws in
        let second = try ProcessPoolExecutor(maxWorkers: 1)
        let futures = [try first.submit(Square(), 2), try second.submit(Square(), 3)]
        var values: [Int] = []
        for try await future in asCompleted(futures) { values.append(try await future.value) }
        #expect(values.sorted() == [4, 9])
        await second.shutdown()
        second.core.waitForIOThread()
      }
    }

    // MARK: wait

    @Test func waitAllCompletedRemovesDuplicates() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let future = try pool.submit(Sleep(), 10)
        let (done, notDone) = await wait([future, future], returnWhen: .allCompleted)
        #expect(done == [future])
        #expect(notDone.isEmpty)
      }
    }

    @Test func waitFirstCompleted() async throws {
      try await withPool(.workers(2)) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let f1 = try pool.submit(Multiply(factor: 2), 21)
        let f2 = try pool.submit(gate.task, 0)
        let cancelled = Fixture.cancelled()
        let (done, notDone) = await wait([f1, f2, cancelled], returnWhen: .firstCompleted)
        #expect(done == [f1])
        #expect(notDone == [cancelled, f2])
        #expect(await gate.waitForArrivals(1))
        gate.open()
        _ = try await f2.value
      }
    }

    @Test func waitFirstCompletedSomeAlreadyCompleted() async throws {
      let pending = ProcessFuture<Int>()
      let notified = Fixture.cancelledAndNotified()
      let successful = Fixture.finished(42)
      let (done, notDone) = await wait([pending, notified, successful], returnWhen: .firstCompleted)
      #expect(done == [notified, successful])
      #expect(notDone == [pending])
    }

    @Test func waitFirstException() async throws {
      try await withPool(.workers(2)) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let f1 = try pool.submit(Multiply(factor: 2), 21)
        _ = try await f1.value
        let f2 = try pool.submit(Divide(divisor: 0), 1)
        let f3 = try pool.submit(gate.task, 0)
        let (done, notDone) = await wait([f1, f2, f3], returnWhen: .firstException)
        #expect(done == [f1, f2])
        #expect(notDone == [f3])
        #expect(await gate.waitForArrivals(1))
        gate.open()
        _ = try await f3.value
      }
    }

    @Test func waitFirstExceptionOneAlreadyFailed() async throws {
      let pending = ProcessFuture<Int>()
      let failed = Fixture.failed()
      let (done, notDone) = await wait([pending, failed], returnWhen: .firstException)
      #expect(done == [failed])
      #expect(notDone == [pending])
    }

    @Test func waitAllCompletedCountsFailuresAndCancellations() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let f1 = try pool.submit(Divide(divisor: 0), 2)
        let f2 = try pool.submit(Multiply(factor: 2), 21)
        let fixtures = [Fixture.finished(42), Fixture.cancelledAndNotified(), Fixture.failed()]
        let (done, notDone) = await wait([f1, f2] + fixtures, returnWhen: .allCompleted)
        #expect(done == Set([f1, f2] + fixtures))
        #expect(notDone.isEmpty)
      }
    }

    @Test func waitTimeoutReturns() async throws {
      let pending = ProcessFuture<Int>()
      let fixtures = [Fixture.cancelledAndNotified(), Fixture.failed(), Fixture.finished(42)]
      let (done, notDone) = await wait(fixtures + [pending], timeout: .milliseconds(50), returnWhen: .allCompleted)
      #expect(done == Set(fixtures))
      #expect(notDone == [pending])
    }
  }
}
