import Synchronization
import Testing

@testable import ProcessPool

/// A `map` without `buffersize` queues a window of its input and returns; the pool's feeder pulls
/// the rest as the queue runs low. These inputs are far longer than the window.
extension WorkerProcessTests {
  @Suite struct LazyMapTests {
    /// Counts the inputs pulled, from whichever thread pulls them.
    final class Pulls: Sendable {
      private let count = Atomic<Int>(0)
      var value: Int { count.load(ordering: .relaxed) }
      func inputs(_ range: Range<Int>) -> LazyMapSequence<Range<Int>, Int> {
        range.lazy.map { value in
          self.count.add(1, ordering: .relaxed)
          return value
        }
      }
    }

    /// An input whose closure is isolated to the main actor (Swift checks that at run time), and
    /// how many of its inputs were pulled.
    @MainActor final class MainActorInput {
      var pulled = 0
      func inputs(_ count: Int) -> LazyMapSequence<Range<Int>, Int> {
        (0..<count).lazy.map { value in
          MainActor.assertIsolated()
          self.pulled += 1
          return value
        }
      }
    }

    /// Every outcome of an ordered map, in order, failures included.
    static func collect<Output>(_ sequence: ProcessMapSequence<Output>) async -> [Result<Output, any Error>] {
      await CollectionTests.collect(sequence)
    }

    /// The most a map can have pulled while its pool's only worker is held: the queue's window,
    /// a batch being pulled, and what is pipelined onto the worker.
    static func windowBound(_ pool: ProcessPoolExecutor) -> Int {
      pool.core.read { $0.feedHighWater } + ChunkSource.submitBatch + 64
    }

    @Test(arguments: [true, false])
    func mapReturnsAfterAWindowAndThePoolPullsTheRest(_ ordered: Bool) async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let pulls = Pulls()
        let count = 20_000
        let task = HoldAt(path: gate.path, at: 0)
        let orderedMap = ordered ? try pool.map(task, pulls.inputs(0..<count), chunksize: 1) : nil
        let unorderedMap = ordered ? nil : try pool.mapUnordered(task, pulls.inputs(0..<count), chunksize: 1)
        #expect(await gate.waitForArrivals(1))
        // The only worker is held at the first input: the rest of the input waits unpulled.
        #expect(pulls.value <= Self.windowBound(pool))
        #expect(pool.statistics.tasksQueued <= Self.windowBound(pool))
        gate.open()
        if let orderedMap {
          var values: [Int] = []
          for try await value in orderedMap { values.append(value) }
          #expect(values == Array(0..<count))
          #expect(orderedMap.currentProgress == ProcessPoolProgress(completed: count, failed: 0, total: count))
        } else if let unorderedMap {
          var seen = [Bool](repeating: false, count: count)
          for try await (index, value) in unorderedMap {
            #expect(index == value && !seen[index])
            seen[index] = true
          }
          #expect(!seen.contains(false))
        }
        #expect(pulls.value == count)
      }
    }

    @MainActor @Test(arguments: [true, false])
    func aMapMadeOnAnActorPullsItsInputLazilyOnThatActor(_ ordered: Bool) async throws {
      // The input's closure is isolated to the main actor (Swift checks that at run time): such
      // an input is pulled on the caller's actor, a batch at a time, never on the pool's feeder.
      let check = LeakCheck()
      let pool = try ProcessPoolExecutor(maxWorkers: 1)
      let input = MainActorInput()
      let count = 20_000
      let inputs = input.inputs(count)
      var values: [Int] = []
      if ordered {
        let sequence = try pool.map(Square(), inputs, chunksize: 1)
        #expect(input.pulled <= Self.windowBound(pool))
        for try await value in sequence { values.append(value) }
      } else {
        let sequence = try pool.mapUnordered(Square(), inputs, chunksize: 1)
        #expect(input.pulled <= Self.windowBound(pool))
        for try await (_, value) in sequence { values.append(value) }
        values.sort()
      }
      #expect(input.pulled == count)
      #expect(values == (0..<count).map { $0 * $0 })
      await pool.shutdown()
      pool.core.waitForIOThread()
      check.verify()
    }

    @MainActor @Test(arguments: [true, false])
    func aShutdownOnTheMapsActorRunsTheWholeInput(_ blocking: Bool) async throws {
      // Unread, the map's input is still pulled to its end: by the actor's task while the
      // actor awaits the shutdown, or by the blocking shutdown itself, which holds the actor.
      let check = LeakCheck()
      let pool = try ProcessPoolExecutor(maxWorkers: 1)
      let input = MainActorInput()
      let count = 5000
      let inputs = input.inputs(count)
      let sequence = try pool.map(Square(), inputs, chunksize: 1)
      #expect(input.pulled < count)
      if blocking {
        Self.shutDownBlocking(pool)
      } else {
        await pool.shutdown()
      }
      #expect(input.pulled == count)
      var values: [Int] = []
      for try await value in sequence { values.append(value) }
      #expect(values == (0..<count).map { $0 * $0 })
      pool.core.waitForIOThread()
      check.verify()
    }

    @MainActor @Test func theExitHookPullsTheRestOfAnInputPulledOnTheMainActor() async throws {
      // `main` returned right after `map`: the exit hook, on the main actor, waits for the pool,
      // and the main actor runs nothing more, so the hook pulls the input itself.
      let check = LeakCheck()
      let pool = try ProcessPoolExecutor(maxWorkers: 1)
      let input = MainActorInput()
      let count = 5000
      let inputs = input.inputs(count)
      let sequence = try pool.map(Square(), inputs, chunksize: 1)
      #expect(input.pulled < count)
      ActivePools.finish(pool.core)
      #expect(input.pulled == count)
      var values: [Int] = []
      for try await value in sequence { values.append(value) }
      #expect(values == (0..<count).map { $0 * $0 })
      pool.core.waitForIOThread()
      check.verify()
    }

    /// The blocking shutdown, from synchronous code on the main actor.
    @MainActor static func shutDownBlocking(_ pool: ProcessPoolExecutor) {
      pool.shutdownAndWait()
    }

    @MainActor @Test func anArrayMappedOnAnActorIsStillPulledLazily() async throws {
      let check = LeakCheck()
      let pool = try ProcessPoolExecutor(maxWorkers: 1)
      let count = 20_000
      let sequence = try pool.map(Square(), Array(0..<count), chunksize: 1)
      #expect(pool.statistics.tasksSubmitted < count)
      var values: [Int] = []
      for try await value in sequence { values.append(value) }
      #expect(values == (0..<count).map { $0 * $0 })
      await pool.shutdown()
      pool.core.waitForIOThread()
      check.verify()
    }

    @Test(arguments: [1, 7])
    func anInputFarIntoALazyInputThatCannotBeEncodedFailsAtItsPosition(_ chunksize: Int) async throws {
      try await withPool { (pool: ProcessPoolExecutor) async throws in
        let count = 3000
        let inputs = (0..<count).lazy.map { NonNegative($0 == 2500 ? -1 : $0) }
        let sequence = try pool.map(DoubleNonNegative(), inputs, chunksize: chunksize)
        let results = await Self.collect(sequence)
        #expect(results.count == count)
        for (index, result) in results.enumerated() where index != 2500 {
          guard (try? result.get()) == index * 2 else {
            Issue.record("item \(index): \(result)")
            return
          }
        }
        #expect { try results[2500].get() } throws: { ($0 as? ProcessPoolError)?.code == .encodingFailed }
        #expect(sequence.currentProgress == ProcessPoolProgress(completed: count - 1, failed: 1, total: count))
      }
    }

    @Test(arguments: [true, false])
    func aLazyMapLeftUnreadStillRunsWholeWhenThePoolIsDroppedOrShutDown(_ dropped: Bool) async throws {
      // CPython's test_del_shutdown with an input longer than the window: the pool does not stop
      // before the input is used up, though nobody reads the results yet.
      let check = LeakCheck()
      let count = 5000
      let pulls = Pulls()
      var pool: ProcessPoolExecutor? = try ProcessPoolExecutor(maxWorkers: 2)
      let results = try pool!.map(Square(), pulls.inputs(0..<count), chunksize: 1)
      let core = pool!.core
      if dropped {
        weak let weakPool = pool
        pool = nil
        #expect(weakPool == nil)
        await core.waitUntilStopped()
      } else {
        await pool!.shutdown(wait: true)
      }
      core.waitForIOThread()
      #expect(pulls.value == count)
      var values: [Int] = []
      for try await value in results { values.append(value) }
      #expect(values == (0..<count).map { $0 * $0 })
      check.verify()
    }

    @Test(arguments: [true, false])
    func leavingALazyMapEarlyStopsPullingItsInput(_ ordered: Bool) async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let pulls = Pulls()
        let count = 100_000
        let task = HoldAt(path: gate.path, at: 3)
        do {
          if ordered {
            for try await value in try pool.map(task, pulls.inputs(0..<count), chunksize: 1) where value == 1 { break }
          } else {
            for try await _ in try pool.mapUnordered(task, pulls.inputs(0..<count), chunksize: 1) { break }
          }
        }
        // The map is gone: its items not started are cancelled, the held one (if it started)
        // is let go, and the rest of the input is never pulled.
        gate.close()
        #expect(try await pool.submit(Square(), 7).value == 49)
        #expect(pulls.value <= Self.windowBound(pool))
        #expect(pool.statistics.tasksQueued == 0)
      }
    }

    @Test func shuttingDownWithCancelFuturesEndsALazyMapWithCancelled() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let pulls = Pulls()
        let count = 100_000
        let sequence = try pool.map(HoldAt(path: gate.path, at: 0), pulls.inputs(0..<count), chunksize: 1)
        #expect(await gate.waitForArrivals(1))
        await pool.shutdown(wait: false, cancelFutures: true)
        gate.open()
        let results = await Self.collect(sequence)
        #expect(try results.first?.get() == 0)
        // The items queued fail at their positions, then the map ends with the same error.
        #expect(results.count < count)
        #expect(pulls.value <= Self.windowBound(pool))
        // What was pipelined behind the held item ran; nothing else did.
        for case .failure(let error) in results {
          #expect((error as? ProcessPoolError)?.code == .cancelled)
        }
        #expect { try results.last!.get() } throws: { ($0 as? ProcessPoolError)?.code == .cancelled }
      }
    }

    @Test(arguments: [true, false])
    func aCrashThatBreaksThePoolMidInputEndsTheMapWithBrokenPool(_ ordered: Bool) async throws {
      var configuration = ProcessPoolExecutor.Configuration.workers(2)
      configuration.crashPolicy = .breakPool
      configuration.workerStandardError = .capture
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let pulls = Pulls()
        let count = 100_000
        var outcomes: [Result<Int, any Error>] = []
        if ordered {
          outcomes = await Self.collect(try pool.map(CrashAt(at: 3000), pulls.inputs(0..<count), chunksize: 1))
        } else {
          var iterator = try pool.mapUnordered(CrashAt(at: 3000), pulls.inputs(0..<count), chunksize: 1)
            .makeAsyncIterator()
          while true {
            do {
              guard let (_, value) = try await iterator.next() else { break }
              outcomes.append(.success(value))
            } catch {
              outcomes.append(.failure(error))
            }
          }
        }
        // Everything up to the crash ran; the rest failed, and what was never pulled ends the map.
        #expect(outcomes.count < count)
        #expect(pulls.value < count)
        #expect(outcomes.contains { (try? $0.get()) != nil })
        for outcome in outcomes {
          guard case .failure(let error) = outcome else { continue }
          let code = (error as? ProcessPoolError)?.code
          #expect(code == .brokenPool || code == .workerCrashed)
        }
        #expect { try outcomes.last!.get() } throws: { ($0 as? ProcessPoolError)?.code == .brokenPool }
        #expect { try pool.submit(Square(), 2) } throws: { ($0 as? ProcessPoolError)?.code == .brokenPool }
      }
    }
  }
}
