/// The feeder: a thread that pulls lazy inputs (`JobSource`) into the queue while it runs low,
/// so that neither a map's caller nor the I/O thread encodes more than a window of a big input,
/// and a user's iterator or `encode` never runs on the I/O thread. It sleeps while the queue is
/// full enough and ends when no source is left.
extension PoolCore {
  /// Started by a transition that set `feederRunning`.
  func startFeeder() {
    do {
      try OSThread.start(name: "processpool-feed") { self.runFeeder(sleeping: true) }
    } catch {
      // No thread to spare: this one pulls until the queue is full enough, then gives the role
      // back (the next transition that finds the queue low tries again).
      runFeeder(sleeping: false)
    }
  }

  /// Pulls to their end the inputs of maps pulled on `actor`, on this thread, which holds that
  /// actor (a blocking shutdown on it, or the exit hook on the main actor): the tasks that would
  /// pull them cannot run meanwhile, and the pool waits for every input to run out.
  func drainSources(pulledOn actor: any Actor) {
    for case let feed as MapFeed in read({ $0.sources }) where feed.pulls(on: actor) {
      feed.drain(into: self)
    }
  }

  func wakeFeeder() {
    feederGate.withLock {
      feederWoken = true
      feederGate.broadcast()
    }
  }

  private func runFeeder(sleeping: Bool) {
    while true {
      switch state.withLock({ $0.nextFeederStep() }) {
      case .feed(let source): source.feed(into: self)
      case .sleep where !sleeping:
        if state.withLock({ $0.feederStepsDown() }) {
          feederGate.withLock { feederWoken = false }
          continue
        }
        return
      case .sleep:
        feederGate.withLock {
          _ = feederGate.wait(until: nil) { feederWoken }
          feederWoken = false
        }
      case .exit: return
      }
    }
  }
}
