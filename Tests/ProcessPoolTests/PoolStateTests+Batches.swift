import Synchronization
import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// The rules for a map's batch of chunks (`JobBatch`) in the queue, on the state alone: it counts
/// as its chunks, a chunk's job is made only when a worker takes it, cancelled chunks are skipped
/// without one, and a shutdown or a broken pool reaches the chunks still queued.
extension PoolStateTests {
  /// A batch of `count` chunks, each with a recording sink; records which jobs were made.
  final class RecordingBatch: JobBatch {
    let sinks: [RecordingSink]
    private let made = Mutex<[Int]>([])
    private let remainders = Mutex<[Int]>([])
    /// The chunks whose job was made, in order.
    var madeJobs: [Int] { made.withLock { $0 } }
    /// Where each remainder handed out by the queue starts.
    var remainderStarts: [Int] { remainders.withLock { $0 } }

    init(_ count: Int) {
      sinks = (0..<count).map { _ in RecordingSink() }
    }

    var jobCount: Int { sinks.count }

    func job(at index: Int) -> Job? {
      guard !sinks[index].isCancelled else { return nil }
      made.withLock { $0.append(index) }
      return Job(frame: Frame.emptyHeader, sink: sinks[index], timeout: nil)
    }

    func liveCount(from index: Int) -> Int { sinks[index...].filter { !$0.isCancelled }.count }

    func remainder(from index: Int) -> any JobSink {
      remainders.withLock { $0.append(index) }
      return Remainder(sinks: Array(sinks[index...]))
    }

    struct Remainder: JobSink {
      let sinks: [RecordingSink]
      func start() -> Bool { false }
      func acknowledgeCancel() {}
      func deliver(_ payload: UnsafeRawBufferPointer, workerPID: Int32) {}
      func fail(_ error: ProcessPoolError) { for sink in sinks { sink.fail(error) } }
      func cancelAll() { for sink in sinks { sink.cancelAll() } }
      func contains(_ future: ObjectIdentifier, chunk: Int) -> Bool { false }
      var isCancelled: Bool { sinks.allSatisfy(\.isCancelled) }
    }
  }

  @Test func aBatchCountsAsItsChunksAndMakesEachJobOnlyWhenAWorkerTakesIt() throws {
    let machine = Machine { $0.jobsPerWorker = 2 }
    let batch = RecordingBatch(5)
    #expect(machine.event { state, effects in state.submit(batch, now: .now, &effects) } == nil)
    #expect(machine.queued == 5)
    #expect(machine.state.statisticsSnapshot.tasksSubmitted == 5)
    #expect(batch.madeJobs.isEmpty)
    let worker = try machine.spawned()
    machine.hello(worker)
    #expect(batch.madeJobs == [0, 1])
    #expect(machine.queued == 3)
    let first = machine.result(worker)
    #expect(first?.sink as? RecordingSink === batch.sinks[0])
    #expect(batch.madeJobs == [0, 1, 2])
    #expect(machine.queued == 2)
  }

  @Test func cancelledChunksAreSkippedWithoutAJobAndNoLongerCountAsQueued() throws {
    let machine = Machine { $0.jobsPerWorker = 1 }
    let batch = RecordingBatch(4)
    machine.submit(batch)
    batch.sinks[0].cancelAll()
    batch.sinks[1].cancelAll()
    #expect(machine.state.statisticsSnapshot.tasksQueued == 2)
    let worker = try machine.spawned()
    machine.hello(worker)
    #expect(batch.madeJobs == [2])
    #expect(machine.queued == 1)
    machine.result(worker)
    #expect(batch.madeJobs == [2, 3])
    #expect(machine.queued == 0)
  }

  @Test func aShutdownCancellingFuturesReachesTheChunksStillQueued() throws {
    let machine = Machine { $0.jobsPerWorker = 1 }
    let batch = RecordingBatch(3)
    machine.submit(batch)
    let worker = try machine.spawned()
    machine.hello(worker)
    machine.event { state, effects in state.shutdown(cancelFutures: true, now: .now, &effects) }
    #expect(batch.remainderStarts == [1])
    for sink in machine.effects.cancellations { sink.cancelAll() }
    #expect(batch.sinks.map(\.isCancelled) == [false, true, true])
    #expect(machine.queued == 0)
  }

  @Test func aBrokenPoolFailsTheChunksStillQueued() throws {
    let machine = Machine()
    let batch = RecordingBatch(3)
    machine.submit(batch)
    machine.event { state, effects in
      state.breakPool(ProcessPoolError(.brokenPool, "broken on purpose"), &effects)
    }
    #expect(batch.remainderStarts == [0])
    for (sink, error) in machine.effects.failures { sink.fail(error) }
    #expect(batch.sinks.allSatisfy { $0.failureCount == 1 })
  }

  @Test func aPutBackJobGoesBeforeTheBatchesQueuedChunks() throws {
    let machine = Machine { $0.jobsPerWorker = 2 }
    let batch = RecordingBatch(3)
    machine.submit(batch)
    let worker = try machine.spawned()
    machine.hello(worker)
    #expect(batch.madeJobs == [0, 1])
    // The first chunk crashed its worker; the second never ran and goes back first.
    machine.exited(worker, .signaled(SIGSEGV))
    #expect(machine.queued == 2)
    let replacement = try machine.spawned()
    machine.hello(replacement)
    #expect(machine.slot(replacement)?.inflight.map { $0.sink as? RecordingSink === batch.sinks[1] } == [true, false])
    #expect(batch.madeJobs == [0, 1, 2])
  }

  @Test func stoppingTheWorkerOfAChunkNamesTheChunk() throws {
    let machine = Machine {
      $0.maxWorkers = 2
      $0.jobsPerWorker = 1
    }
    let batch = ChunkKeyedBatch(2)
    machine.submit(batch)
    let first = try machine.spawned()
    let second = try machine.spawned()
    machine.hello(first)
    machine.hello(second)
    let stopped = machine.event { state, effects in
      state.stopWorker(running: ObjectIdentifier(batch), chunk: 1, now: .now, &effects)
    }
    #expect(stopped != nil)
    #expect(machine.signals(second) == [SIGTERM])
    #expect(machine.signals(first).isEmpty)
  }

  /// A batch whose chunks' sinks are named by the batch and the chunk, as a map's are.
  final class ChunkKeyedBatch: JobBatch {
    let count: Int
    init(_ count: Int) { self.count = count }
    var jobCount: Int { count }
    func job(at index: Int) -> Job? {
      Job(frame: Frame.emptyHeader, sink: Sink(batch: self, index: index), timeout: nil)
    }
    func liveCount(from index: Int) -> Int { count - index }
    func remainder(from index: Int) -> any JobSink { Sink(batch: self, index: -1) }

    struct Sink: JobSink {
      let batch: ChunkKeyedBatch
      let index: Int
      func start() -> Bool { true }
      func acknowledgeCancel() {}
      func deliver(_ payload: UnsafeRawBufferPointer, workerPID: Int32) {}
      func fail(_ error: ProcessPoolError) {}
      func cancelAll() {}
      func contains(_ future: ObjectIdentifier, chunk: Int) -> Bool {
        future == ObjectIdentifier(batch) && chunk == index
      }
      var isCancelled: Bool { false }
    }
  }
}
