import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// The scheduler's rule for tiny tasks, on a worker slot alone (instants given, so no timing).
@Suite struct AdaptivePipeliningTests {
  static func slot() -> WorkerSlot {
    WorkerSlot(id: 1, launcher: 0, launched: false, pid: 1, spawnedAt: .now)
  }

  static func configuration(jobsPerWorker: Int, adaptive: Bool = true) -> ProcessPoolExecutor.Configuration {
    var configuration = ProcessPoolExecutor.Configuration()
    configuration.jobsPerWorker = jobsPerWorker
    configuration.adaptivePipelining = adaptive
    return configuration
  }

  /// Finishes one job that took `duration`.
  static func finish(_ slot: inout WorkerSlot, after duration: Duration) {
    let start = MonotonicInstant.now
    slot.headStartedAt = start
    slot.headFinished(at: start.advanced(by: duration))
  }

  @Test func eightFastJobsInARowDeepenThePipelineAndASlowOneResetsIt() {
    let configuration = Self.configuration(jobsPerWorker: 2)
    var slot = Self.slot()
    for _ in 0..<7 { Self.finish(&slot, after: .microseconds(50)) }
    #expect(slot.pipelineDepth(configuration) == 2)
    Self.finish(&slot, after: .microseconds(50))
    #expect(slot.pipelineDepth(configuration) == 64)
    Self.finish(&slot, after: .milliseconds(1))
    #expect(slot.pipelineDepth(configuration) == 2)
  }

  /// Finishes `count` jobs of a busy worker, one every `interval` (as the I/O thread sees them).
  static func finish(_ slot: inout WorkerSlot, _ count: Int, every interval: Duration) {
    var now = MonotonicInstant.now
    for _ in 0..<count {
      slot.headStartedAt = now
      now = now.advanced(by: interval)
      slot.headFinished(at: now)
    }
  }

  @Test func resultsComingBackEveryFewMicrosecondsDeepenThePipelineByTheirPace() {
    let configuration = Self.configuration(jobsPerWorker: 2)
    var slot = Self.slot()
    // A fast streak is needed first; a window of results measures the pace (idle time counts).
    Self.finish(&slot, 8, every: .microseconds(50))
    #expect(slot.pipelineDepth(configuration) == 64)
    Self.finish(&slot, 2 * WorkerSlot.windowLength, every: .microseconds(5))
    #expect(slot.pipelineDepth(configuration) == 128)
    Self.finish(&slot, WorkerSlot.windowLength, every: .microseconds(1))
    #expect(slot.pipelineDepth(configuration) == WorkerSlot.deepestPipeline)
    // Jobs of 20 µs or more keep the usual fast depth (a few milliseconds of work at most).
    Self.finish(&slot, WorkerSlot.windowLength, every: .microseconds(20))
    #expect(slot.pipelineDepth(configuration) == 64)
    Self.finish(&slot, 2 * WorkerSlot.windowLength, every: .microseconds(1))
    #expect(slot.pipelineDepth(configuration) == WorkerSlot.deepestPipeline)
    // A slow job resets all of it.
    Self.finish(&slot, 1, every: .milliseconds(1))
    #expect(slot.pipelineDepth(configuration) == 2)
    Self.finish(&slot, 8, every: .microseconds(1))
    #expect(slot.pipelineDepth(configuration) == 64)
  }

  @Test func withManyWorkersPerProcessorAJobCountsAsFastForLonger() {
    let configuration = Self.configuration(jobsPerWorker: 2)
    var slot = Self.slot()
    // 256 workers on 2 processors: a job's time here includes its worker's wait for one.
    let stretched = WorkerSlot.fastJob * 128
    for _ in 0..<8 {
      let start = MonotonicInstant.now
      slot.headStartedAt = start
      slot.headFinished(at: start.advanced(by: .milliseconds(5)), fastWithin: stretched)
    }
    #expect(slot.pipelineDepth(configuration) == 64)
    let start = MonotonicInstant.now
    slot.headStartedAt = start
    slot.headFinished(at: start.advanced(by: .milliseconds(50)), fastWithin: stretched)
    #expect(slot.pipelineDepth(configuration) == 2)
  }

  @Test func itNeverAppliesWithOneJobPerWorkerOrWhenTurnedOff() {
    var slot = Self.slot()
    for _ in 0..<8 { Self.finish(&slot, after: .microseconds(10)) }
    #expect(slot.pipelineDepth(Self.configuration(jobsPerWorker: 1)) == 1)
    #expect(slot.pipelineDepth(Self.configuration(jobsPerWorker: 2, adaptive: false)) == 2)
    #expect(slot.pipelineDepth(Self.configuration(jobsPerWorker: 64)) == 64)
  }
}
