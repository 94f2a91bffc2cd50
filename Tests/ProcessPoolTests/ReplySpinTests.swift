import Testing

@testable import ProcessPool

/// The I/O thread's bounded look for a reply before it sleeps: it stops at the first reply it
/// sees, and after looks that found nothing it skips ever more of them, up to a bound. (How
/// long a look lasts is not asserted: that is timing.)
@Suite struct ReplySpinTests {
  @Test func aLookEndsAtTheFirstReplyItSees() {
    var spin = ReplySpin()
    var checks = 0
    #expect(
      spin.look {
        checks += 1
        return true
      })
    #expect(checks == 1)
  }

  /// The sleeps skipped between the looks of `calls` calls that never find a reply.
  static func skips(_ spin: inout ReplySpin, calls: Int) -> [Int] {
    var skips: [Int] = []
    var skipped = -1
    for _ in 0..<calls {
      var looked = false
      #expect(
        !spin.look {
          looked = true
          return false
        })
      if looked {
        if skipped >= 0 { skips.append(skipped) }
        skipped = 0
      } else {
        skipped += 1
      }
    }
    return skips
  }

  @Test func looksThatFindNothingAreSkippedTwiceAsLongEachTimeUpToABound() {
    var spin = ReplySpin()
    #expect(Self.skips(&spin, calls: 260) == [1, 2, 4, 8, 16, 32, 64, 64])
  }

  @Test func aLookThatFindsAReplyEndsThePenalty() {
    var spin = ReplySpin()
    _ = Self.skips(&spin, calls: 20)
    // Skipped looks until one is made, which finds the reply.
    var looked = false
    while !looked {
      _ = spin.look {
        looked = true
        return true
      }
    }
    #expect(Self.skips(&spin, calls: 7) == [1, 2])
  }
}
