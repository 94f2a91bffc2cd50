import Synchronization

/// How a map's iterator learns that its chunks are done, told by the thread that finishes each
/// (one per map, shared by its batches and its feed). An unordered map collects every chunk in
/// the order they finish; an ordered one is woken only by the chunk it waits for (or by its
/// feed), so chunks finishing out of order do not wake it in vain.
final class ChunkArrivals: WakeSource {
  private struct State {
    /// Finished chunks, in the order they finished (while `collects`); those before `head` were
    /// taken (popped by moving `head`, so a long backlog is not shifted at each take).
    var chunks: [(MapBatch, Int)] = []
    var head = 0
    var collects: Bool
    /// The chunk an ordered map's iterator waits for.
    var wanted: (ObjectIdentifier, Int)?
    var wake = WakeSlot()
  }
  private let state: Mutex<State>

  /// `collects`: keep every finished chunk for `take` (an unordered map).
  init(collects: Bool) {
    state = Mutex(State(collects: collects))
  }

  /// Chunk `index` of `batch` is done.
  func arrived(_ batch: MapBatch, _ index: Int) {
    let continuation = state.withLock { state -> CheckedContinuation<Void, Never>? in
      if state.collects {
        state.chunks.append((batch, index))
      } else {
        guard let wanted = state.wanted, wanted.0 == ObjectIdentifier(batch), wanted.1 == index else { return nil }
        state.wanted = nil
      }
      return state.wake.fire()
    }
    continuation?.resume()
  }

  /// The next chunk `wait` is to return for (an ordered map); its iterator checks whether it is
  /// done after this, so that it is either seen done or wakes the wait.
  func want(_ batch: MapBatch, _ index: Int) {
    state.withLock { $0.wanted = (ObjectIdentifier(batch), index) }
  }

  /// The oldest finished chunk not yet taken (an unordered map).
  func take() -> (MapBatch, Int)? {
    state.withLock { state in
      guard state.head < state.chunks.count else { return nil }
      let chunk = state.chunks[state.head]
      state.head += 1
      if state.head == state.chunks.count || state.head >= 1024 && state.head * 2 >= state.chunks.count {
        state.chunks.removeSubrange(0..<state.head)
        state.head = 0
      }
      return chunk
    }
  }

  /// Stops collecting and forgets what was collected (the map ended early): chunks hold their
  /// batch, which holds the map's source, which holds this.
  func stopCollecting() {
    state.withLock { state in
      state.collects = false
      state.chunks = []
      state.head = 0
    }
  }

  /// Wakes the iterator (the feed made chunks, or ended).
  func fire() {
    state.withLock { $0.wake.fire() }?.resume()
  }

  func withWakeSlot<R>(_ body: (inout WakeSlot) -> R) -> R {
    state.withLock { body(&$0.wake) }
  }

  /// Returns after a wake-up (one since the last wait), at the deadline, or on cancellation; on
  /// the caller's actor (`isolation`), so a chunk's arrival resumes the iterator without a hop.
  func wait(until deadline: ContinuousClock.Instant?, isolation: isolated (any Actor)?) async {
    await waitForFire(until: deadline, isolation: isolation)
  }
}
