import Testing

@testable import ProcessPool

/// The list dispatch takes workers from: the lowest level first, in listing order within a
/// level, whatever was taken or listed before.
@Suite struct WorkerAvailabilityTests {
  @Test func theLowestLevelInTheRangeComesFirstEvenAfterItsLevelsEmptiedAndFilledAgain() {
    var available = WorkerAvailability()
    _ = available.list(1, at: 200, limit: 16)
    _ = available.list(2, at: 3, limit: 16)
    _ = available.list(3, at: 3, limit: 16)
    #expect(available.takeFirst(in: 0...Int.max)! == (2, 3))
    #expect(available.takeFirst(in: 4...Int.max)! == (1, 200))
    #expect(available.takeFirst(in: 0...2) == nil)
    #expect(available.takeFirst(in: 0...Int.max)! == (3, 3))
    #expect(available.takeFirst(in: 0...Int.max) == nil)
    // Levels below the ones looked at last are listed again.
    _ = available.list(4, at: 150, limit: 16)
    _ = available.list(5, at: 0, limit: 16)
    _ = available.list(6, at: 7, limit: 16)
    #expect(available.takeFirst(in: 1...Int.max)! == (6, 7))
    #expect(available.takeFirst(in: 0...Int.max)! == (5, 0))
    #expect(available.takeFirst(in: 0...Int.max)! == (4, 150))
    #expect(available.takeFirst(in: 0...Int.max) == nil)
    // A level replaced by its compacted entries is found again.
    _ = available.list(7, at: 9, limit: 16)
    #expect(available.takeFirst(in: 0...Int.max)! == (7, 9))
    available.replace(level: 2, with: [8, 9])
    #expect(available.takeFirst(in: 0...Int.max)! == (8, 2))
    #expect(available.takeFirst(in: 0...Int.max)! == (9, 2))
    #expect(available.takeFirst(in: 0...Int.max) == nil)
  }
}
