import Synchronization
import Testing

@testable import ProcessPool

/// `mapUnordered` with real workers: every item once with its position, in the order they
/// finish, under `map`'s rules for chunks, buffers, timeouts and per-item errors.
extension WorkerProcessTests {
  @Suite struct UnorderedMapTests {
    /// Collects an unordered map by position, recording thrown errors at `lastIndex` and going on.
    static func collect<Output>(_ sequence: ProcessUnorderedMapSequence<Output>) async -> [Int: Result<
      Output, any Error
    >] {
      var iterator = sequence.makeAsyncIterator()
      var results: [Int: Result<Output, any Error>] = [:]
      while true {
        do {
          guard let (index, value) = try await iterator.next() else { break }
          #expect(results[index] == nil)
          results[index] = .success(value)
        } catch {
          guard let index = iterator.lastIndex else {
            Issue.record("an error before any item: \(error)")
            break
          }
          results[index] = .failure(error)
        }
      }
      return results
    }

    @Test(arguments: [nil, 1, 3, 40, 50])
    func everyItemOnceWithItsPosition(_ chunksize: Int?) async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        var results: [Int: Int] = [:]
        for try await (index, value) in try pool.mapUnordered(Square(), 0..<40, chunksize: chunksize) {
          #expect(results[index] == nil)
          results[index] = value
        }
        #expect(results == Dictionary(uniqueKeysWithValues: (0..<40).map { ($0, $0 * $0) }))
      }
    }

    @Test func aSlowFirstItemComesLast() async throws {
      // One job per worker: nothing waits on the held worker's socket behind item 0.
      var configuration = ProcessPoolExecutor.Configuration.workers(2)
      configuration.jobsPerWorker = 1
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        var iterator = try pool.mapUnordered(HoldAt(path: gate.path, at: 0), 0..<20, chunksize: 1)
          .makeAsyncIterator()
        #expect(await gate.waitForArrivals(1))
        // Item 0 is held at the gate: the other 19 come first.
        var seen: [Int] = []
        for _ in 1..<20 {
          let (index, value) = try #require(try await iterator.next())
          #expect(index == value)
          seen.append(index)
        }
        #expect(seen.sorted() == Array(1..<20))
        gate.open()
        let last = try #require(try await iterator.next())
        #expect(last == (0, 0))
        #expect(try await iterator.next() == nil)
      }
    }

    @Test(arguments: [1, 3])
    func aFailingItemThrowsInItsTurnWithItsPosition(_ chunksize: Int) async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let inputs = [Pair(a: 5, b: 2), Pair(a: 5, b: 0), Pair(a: 5, b: 3), Pair(a: 5, b: 5)]
        let results = await Self.collect(try pool.mapUnordered(DivMod(), inputs, chunksize: chunksize))
        #expect(results.count == 4)
        #expect(try results[0]?.get() == Pair(a: 2, b: 1))
        #expect(throws: DivisionByZero(dividend: 5)) { try results[1]?.get() }
        #expect(try results[2]?.get() == Pair(a: 1, b: 2))
        #expect(try results[3]?.get() == Pair(a: 1, b: 0))
      }
    }

    // 16: a chunk of that many inputs gets a frame of its own; smaller ones share their batch's.
    @Test(arguments: [1, 3, 8, 16])
    func anInputThatCannotBeEncodedFailsAtItsPosition(_ chunksize: Int) async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let values = [-1, 1, 2, -3, 4, -5, -6, 7]
        let sequence = try pool.mapUnordered(DoubleNonNegative(), values.map(NonNegative.init), chunksize: chunksize)
        let results = await Self.collect(sequence)
        #expect(results.count == values.count)
        #expect(sequence.currentProgress == ProcessPoolProgress(completed: 4, failed: 4, total: 8))
        for (index, value) in values.enumerated() {
          if value < 0 {
            #expect { try results[index]?.get() } throws: { ($0 as? ProcessPoolError)?.code == .encodingFailed }
          } else {
            #expect(try results[index]?.get() == value * 2)
          }
        }
      }
    }

    @Test func argumentsAreCheckedAsForMap() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        for bad in [0, -1] {
          #expect { try pool.mapUnordered(Square(), [1], chunksize: bad) } throws: {
            ($0 as? ProcessPoolError)?.code == .invalidArgument
          }
          #expect { try pool.mapUnordered(Square(), [1], buffersize: bad) } throws: {
            ($0 as? ProcessPoolError)?.code == .invalidArgument
          }
        }
      }
    }

    @Test func timeoutEndsTheIterationAndCancelsTheRest() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        var iterator = try pool.mapUnordered(Sleep(), [0, 0, 60_000, 0, 0], chunksize: 1, timeout: .milliseconds(500))
          .makeAsyncIterator()
        var indices: [Int] = []
        do {
          while let (index, _) = try await iterator.next() { indices.append(index) }
          Issue.record("the map must time out")
        } catch let error as ProcessPoolError {
          #expect(error.code == .timedOut)
        }
        #expect(!indices.contains(2))
        #expect(try await iterator.next() == nil)
        pool.terminateWorkers()
      }
    }

    @Test func buffersizeBoundsWhatIsPulledFromAnInfiniteSequence() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let pulled = PulledCounter()
        let sequence = try pool.mapUnordered(Describe(), CountingSequence(pulled: pulled), chunksize: 1, buffersize: 2)
        #expect(pulled.value == 2)
        var seen: [Int] = []
        for try await (index, value) in sequence {
          #expect(value == String(index))
          seen.append(index)
          if seen.count == 3 { break }
        }
        #expect(Set(seen).count == 3 && seen.allSatisfy { $0 < 5 })
        #expect(pulled.value <= 5)
      }
    }

    @Test func breakingOutCancelsPendingWorkAndLeavesThePoolHealthy() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        for try await (_, value) in try pool.mapUnordered(Square(), 0..<100, chunksize: 1) {
          #expect(value >= 0)
          break
        }
        #expect(try await pool.submit(Square(), 7).value == 49)
      }
    }
  }
}

/// `map(…, taskTimeout:)`: a per-call limit for this map's chunks, overriding the pool's.
extension WorkerProcessTests {
  @Suite struct MapTaskTimeoutTests {
    @Test(arguments: [false, true])
    func aMapsOwnTaskTimeoutStopsItsSlowItem(_ unordered: Bool) async throws {
      try await withPool(.workers(2)) { (pool: ProcessPoolExecutor) async throws in
        let inputs = [0, 60_000, 0, 0]
        var failures: [Int: ProcessPoolError] = [:]
        var values: [Int: Int] = [:]
        if unordered {
          var iterator = try pool.mapUnordered(Sleep(), inputs, chunksize: 1, taskTimeout: .milliseconds(300))
            .makeAsyncIterator()
          while true {
            do {
              guard let (index, value) = try await iterator.next() else { break }
              values[index] = value
            } catch let error as ProcessPoolError {
              failures[iterator.lastIndex!] = error
            }
          }
        } else {
          var iterator = try pool.map(Sleep(), inputs, chunksize: 1, taskTimeout: .milliseconds(300))
            .makeAsyncIterator()
          for index in inputs.indices {
            do {
              values[index] = try await iterator.next()
            } catch let error as ProcessPoolError {
              failures[index] = error
            }
          }
          #expect(try await iterator.next() == nil)
        }
        #expect(values == [0: 0, 2: 0, 3: 0])
        #expect(failures.keys.sorted() == [1])
        #expect(failures[1]?.code == .taskTimedOut)
        #expect(pool.statistics.tasksTimedOut == 1)
        // The pool's own setting (none) is unchanged: a plain submit has no limit.
        #expect(pool.configuration.taskTimeout == nil)
      }
    }

    @Test func aMapsTaskTimeoutMustBePositive() async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        for bad in [Duration.zero, .seconds(-1)] {
          #expect { try pool.map(Square(), [1], taskTimeout: bad) } throws: {
            ($0 as? ProcessPoolError)?.code == .invalidArgument
          }
          #expect { try pool.mapUnordered(Square(), [1], taskTimeout: bad) } throws: {
            ($0 as? ProcessPoolError)?.code == .invalidArgument
          }
        }
      }
    }
  }
}
