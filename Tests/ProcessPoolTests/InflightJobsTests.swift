import Testing

@testable import ProcessPool

/// A worker's jobs in flight: oldest first through removals from the front and appends at the
/// back, across the points where the room behind is given back.
@Suite struct InflightJobsTests {
  static func job() -> Job {
    Job(frame: Frame.emptyHeader, sink: PoolStateTests.RecordingSink(), timeout: nil)
  }

  @Test func removalsFromTheFrontKeepTheRestInOrder() {
    var inflight: InflightJobs = []
    var expected: [Job] = []
    for round in 0..<5 {
      for _ in 0..<(100 + 37 * round) {
        let job = Self.job()
        inflight.append(job)
        expected.append(job)
      }
      for _ in 0..<(90 + 30 * round) {
        #expect(inflight.first === expected.first)
        inflight.removeFirst()
        expected.removeFirst()
        #expect(inflight.count == expected.count)
      }
      #expect(inflight.map { ObjectIdentifier($0) } == expected.map { ObjectIdentifier($0) })
    }
    while !expected.isEmpty {
      inflight.removeFirst()
      expected.removeFirst()
    }
    #expect(inflight.isEmpty && inflight.first == nil)
  }

  @Test func aRemovedJobIsReleasedAtOnce() {
    var inflight: InflightJobs = [Self.job(), Self.job()]
    final class Watch { weak var job: Job? }
    let first = Watch()
    first.job = inflight.first
    #expect(first.job != nil)
    inflight.removeFirst()
    #expect(first.job == nil)
    #expect(inflight.count == 1)
  }
}
