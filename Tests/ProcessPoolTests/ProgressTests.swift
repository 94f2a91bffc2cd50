import Synchronization
import Testing

@testable import ProcessPool

/// Progress of a map or of submitted futures, as a callback and as a stream.
extension WorkerProcessTests {
  @Suite struct ProgressTests {
    @Test func mapReportsEveryChunkToItsHandler() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let updates = Mutex<[ProcessPoolProgress]>([])
        let inputs = Array(1...60)
        let sequence = try pool.map(FailOnMultiples(of: 7), inputs, chunksize: 4) { progress in
          updates.withLock { $0.append(progress) }
        }
        var failures = 0
        var iterator = sequence.makeAsyncIterator()
        while true {
          do {
            guard try await iterator.next() != nil else { break }
          } catch {
            failures += 1
          }
        }
        #expect(failures == 8)
        let seen = updates.withLock { $0 }
        // One update per chunk of 4, each finishing 4 more; the last one is the whole map.
        #expect(seen.count == 15)
        #expect(seen.map(\.finished).sorted() == Array(stride(from: 4, through: 60, by: 4)))
        #expect(seen.allSatisfy { $0.total == 60 })
        let last = seen.max { $0.finished < $1.finished }!
        #expect(last == ProcessPoolProgress(completed: 52, failed: 8, total: 60))
        #expect(last.isFinished && last.fractionFinished == 1)
        #expect("\(last)" == "60/60 (8 failed)")
        #expect(sequence.currentProgress == last)
      }
    }

    @Test func mapProgressStreamEndsWhenTheMapIsDone() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let results = try pool.map(Square(), 0..<200, chunksize: 8)
        let stream = results.progress
        let watcher = Task {
          var last: ProcessPoolProgress?
          var count = 0
          for await progress in stream {
            if let last { #expect(progress.finished >= last.finished) }
            last = progress
            count += 1
          }
          return (last, count)
        }
        var sum = 0
        for try await value in results { sum += value }
        #expect(sum == (0..<200).reduce(0) { $0 + $1 * $1 })
        let (last, count) = await watcher.value
        #expect(last == ProcessPoolProgress(completed: 200, failed: 0, total: 200))
        #expect(count >= 1)
        // A stream asked for afterwards gives the final value and ends.
        var late: [ProcessPoolProgress] = []
        for await progress in results.progress { late.append(progress) }
        #expect(late == [ProcessPoolProgress(completed: 200, failed: 0, total: 200)])
      }
    }

    @Test func aLazyInputsTotalBecomesKnownWhenItRunsOut() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let updates = Mutex<[ProcessPoolProgress]>([])
        let lazy = (0..<30).lazy.filter { _ in true }.makeIterator()
        let inputs = IteratorSequence(lazy)
        let results = try pool.map(Square(), inputs, chunksize: 1, buffersize: 3) { progress in
          updates.withLock { $0.append(progress) }
        }
        #expect(results.currentProgress.total == nil)
        var count = 0
        for try await _ in results { count += 1 }
        #expect(count == 30)
        #expect(results.currentProgress == ProcessPoolProgress(completed: 30, failed: 0, total: 30))
        #expect(updates.withLock { $0.contains { $0.total == nil } })
      }
    }

    @Test func anAbandonedInfiniteMapEndsItsProgressStream() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let pulled = PulledCounter()
        var results: ProcessMapSequence<String>? = try pool.map(
          Describe(), CountingSequence(pulled: pulled), chunksize: 1, buffersize: 2)
        let stream = results!.progress
        for try await value in results! where value == "5" { break }
        results = nil
        var last: ProcessPoolProgress?
        for await progress in stream { last = progress }
        #expect(last?.total == nil)
        #expect((last?.completed ?? 0) >= 6)
      }
    }

    @Test func submittedFuturesReportProgressIncludingCancelledOnes() async throws {
      var configuration = ProcessPoolExecutor.Configuration.workers(1)
      configuration.jobsPerWorker = 1
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let blocker = try pool.submit(gate.task, 0)
        #expect(await gate.waitForArrivals(1))
        let queued = try (1...5).map { try pool.submit(Square(), $0) }
        let calls = Mutex<[ProcessPoolProgress]>([])
        ProcessPoolProgress.observe([blocker] + queued) { progress in calls.withLock { $0.append(progress) } }
        let stream = ProcessPoolProgress.updates(of: [blocker] + queued)
        #expect(queued[4].cancel())
        gate.open()
        for future in queued.prefix(4) { _ = try await future.value }
        _ = try await blocker.value
        var last: ProcessPoolProgress?
        for await progress in stream { last = progress }
        #expect(last == ProcessPoolProgress(completed: 5, failed: 1, total: 6))
        // The start (nothing finished of 6), then one call per future.
        let seen = calls.withLock { $0 }
        #expect(seen.first == ProcessPoolProgress(completed: 0, failed: 0, total: 6))
        #expect(seen.map(\.finished).sorted() == Array(0...6))
      }
    }
  }
}

/// Fails for multiples of `divisor`.
struct FailOnMultiples: ProcessTask {
  var of: Int
  func run(_ x: Int) async throws -> Int {
    if x % of == 0 { throw DivisionByZero(dividend: x) }
    return x
  }
}
