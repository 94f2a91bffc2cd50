import Testing

@testable import ProcessPool

/// The line of a crash report an error's description quotes (`ProcessPoolError.reason`), found
/// in the report's UTF-8 bytes.
@Suite struct CrashReasonTests {
  @Test func theRuntimesMessageWinsOverLaterLines() {
    let report = "loading rows\n  Fatal error: bad row 17  \nCurrent stack trace:\n0 main\n"
    #expect(ProcessPoolError.reason(inReport: report) == "Fatal error: bad row 17")
  }

  @Test func markersAreTriedInOrderNotByPosition() {
    let report = "error: a tool's complaint\nPrecondition failed: n > 0\nFatal error: later\n"
    #expect(ProcessPoolError.reason(inReport: report) == "Fatal error: later")
    #expect(ProcessPoolError.reason(inReport: "x error: one\nProgram crashed: two") == "Program crashed: two")
  }

  @Test func withoutAMarkerTheLastLineThatIsNotBlankIsTheReason() {
    #expect(ProcessPoolError.reason(inReport: "first\n\tsecond line\t\n \t \n") == "second line")
    #expect(ProcessPoolError.reason(inReport: "only") == "only")
  }

  @Test func anEmptyOrBlankReportHasNoReason() {
    #expect(ProcessPoolError.reason(inReport: "") == nil)
    #expect(ProcessPoolError.reason(inReport: " \n\t\r\n\u{2028}") == nil)
  }

  @Test func everyKindOfLineEndEndsALine() {
    for separator in ["\n", "\r", "\r\n", "\u{0B}", "\u{0C}", "\u{85}", "\u{2028}", "\u{2029}"] {
      let report = "Fatal error: bad" + separator + "tail"
      #expect(ProcessPoolError.reason(inReport: report) == "Fatal error: bad")
      #expect(ProcessPoolError.reason(inReport: "head" + separator + "last") == "last")
    }
  }

  @Test func textThatIsNotASCIIComesBackWhole() {
    let report = "Fatal error: zeile «17» ist ungültig — 行\nnext"
    #expect(ProcessPoolError.reason(inReport: report) == "Fatal error: zeile «17» ist ungültig — 行")
    // A marker cut by a line end is no marker.
    #expect(ProcessPoolError.reason(inReport: "Fatal\nerror: x\nlast") == "error: x")
  }
}
