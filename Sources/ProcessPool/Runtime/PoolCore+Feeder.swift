/// The feeder: a thread that pulls lazy inputs (`JobSource`) into the queue while it runs low,
/// so that neither a map's caller nor the I/O thread encodes more than a window of a big input,
/// and a user's iterator or `encode` never runs on the I/O thread.
extension PoolCore {
  /// Started by a transition that set `feederRunning`; it ends when the queue is full enough.
  func startFeeder() {
    do {
      try OSThread.start(name: "processpool-feed") { self.runFeeder() }
    } catch {
      // No thread to spare: this one pulls the window instead (bounded by the high-water mark).
      runFeeder()
    }
  }

  private func runFeeder() {
    while let source = state.withLock({ $0.nextSourceToFeed() }) {
      source.feed(into: self)
    }
  }
}
