/// Something an async waiter waits on until it is fired (`CompletionSignal`, `ChunkArrivals`):
/// the owner keeps a `WakeSlot` under its lock, and the wait itself, with its deadline and its
/// cancellation, is written once here.
protocol WakeSource: AnyObject, Sendable {
  /// Fires the slot and resumes the waiter, if one is parked.
  func fire()
  /// Runs `body` on the slot under the owner's lock.
  func withWakeSlot<R>(_ body: (inout WakeSlot) -> R) -> R
}

extension WakeSource {
  /// Returns after a `fire` (one since the last wait), at the deadline, or on cancellation; on
  /// the caller's actor (`isolation`), so a fire resumes the waiter without a hop.
  func waitForFire(until deadline: ContinuousClock.Instant?, isolation: isolated (any Actor)?) async {
    let timer = deadline.map { deadline in
      Task { [weak self] in
        try? await Task.sleep(until: deadline, clock: .continuous)
        self?.fire()
      }
    }
    defer { timer?.cancel() }
    await withTaskCancellationHandler(
      operation: {
        await withCheckedContinuation(isolation: isolation) { (continuation: CheckedContinuation<Void, Never>) in
          if withWakeSlot({ $0.park(continuation) }) { continuation.resume() }
        }
      },
      onCancel: { fire() }, isolation: isolation)
    withWakeSlot { $0.reset() }
  }
}
