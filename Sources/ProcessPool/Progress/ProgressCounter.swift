import Synchronization

/// The counts behind a ``ProcessPoolProgress``: one atomic word holds completed (high half) and
/// failed (low half), so every snapshot is consistent without a lock. Observers (streams) take a
/// lock, and only when there are some.
final class ProgressCounter: Sendable {
  private let counts = Atomic<UInt64>(0)
  /// The total, or -1 while unknown.
  private let total: Atomic<Int>
  private let handler: (@Sendable (ProcessPoolProgress) -> Void)?
  private let observerCount = Atomic<Int>(0)
  private let observers = Mutex<(next: Int, open: [Int: AsyncStream<ProcessPoolProgress>.Continuation], ended: Bool)>(
    (0, [:], false))

  init(total: Int?, handler: (@Sendable (ProcessPoolProgress) -> Void)?) {
    self.total = Atomic(total ?? -1)
    self.handler = handler
  }

  var snapshot: ProcessPoolProgress { progress(counts.load(ordering: .relaxed)) }

  private func progress(_ word: UInt64) -> ProcessPoolProgress {
    let total = total.load(ordering: .relaxed)
    return ProcessPoolProgress(
      completed: Int(word >> 32), failed: Int(word & 0xffff_ffff), total: total < 0 ? nil : total)
  }

  /// One item finished.
  func record(success: Bool) {
    record(completed: success ? 1 : 0, failed: success ? 0 : 1)
  }

  /// Several items finished at once (a chunk).
  func record(completed: Int, failed: Int) {
    let word = counts.wrappingAdd(UInt64(completed) << 32 | UInt64(failed), ordering: .relaxed).newValue
    publish(progress(word))
  }

  /// A map chunk of `count` items finished: every item failed with the chunk, or each has its
  /// own outcome.
  func record(_ chunk: Result<RawOutcomes, any Error>, count: Int) {
    switch chunk {
    case .success(let outcomes):
      record(completed: count - outcomes.failed, failed: outcomes.failed)
    case .failure:
      record(completed: 0, failed: count)
    }
  }

  /// The input ran out: now the total is known.
  func setTotal(_ count: Int) {
    total.store(count, ordering: .relaxed)
    publish(snapshot)
  }

  private func publish(_ progress: ProcessPoolProgress) {
    handler?(progress)
    guard observerCount.load(ordering: .relaxed) > 0 else { return }
    if progress.isFinished {
      end(with: progress)
    } else {
      observers.withLock { state in
        for continuation in state.open.values { continuation.yield(progress) }
      }
    }
  }

  /// Ends every stream (the work is done, or abandoned), after a last update.
  func end(with last: ProcessPoolProgress? = nil) {
    let open = observers.withLock { state in
      defer {
        state.open = [:]
        state.ended = true
      }
      return Array(state.open.values)
    }
    for continuation in open {
      if let last { continuation.yield(last) }
      continuation.finish()
    }
  }

  /// A stream that starts with the current value and ends when every item has finished.
  func updates() -> AsyncStream<ProcessPoolProgress> {
    let (stream, continuation) = AsyncStream.makeStream(
      of: ProcessPoolProgress.self, bufferingPolicy: .bufferingNewest(1))
    let id = observers.withLock { state -> Int? in
      if state.ended { return nil }
      state.next += 1
      state.open[state.next] = continuation
      return state.next
    }
    guard let id else {
      continuation.yield(snapshot)
      continuation.finish()
      return stream
    }
    observerCount.add(1, ordering: .relaxed)
    continuation.onTermination = { [weak self] _ in
      guard let self else { return }
      self.observers.withLock { _ = $0.open.removeValue(forKey: id) }
      self.observerCount.subtract(1, ordering: .relaxed)
    }
    let now = snapshot
    continuation.yield(now)
    if now.isFinished { end(with: now) }
    return stream
  }

  /// Counts futures that already exist, through their done callbacks.
  func track<Output>(_ futures: [ProcessFuture<Output>]) {
    setTotal(futures.count)
    for future in futures {
      future.addDoneCallback { [self] future in
        guard case .success = future.outcome else { return self.record(success: false) }
        self.record(success: true)
      }
    }
  }
}
