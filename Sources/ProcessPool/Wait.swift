import Synchronization

/// When ``wait(_:timeout:returnWhen:)->(Set<ProcessFuture<Output>>,_)`` returns.
public enum ReturnCondition: Sendable, Hashable {
  /// As soon as any future finishes or is cancelled.
  case firstCompleted
  /// As soon as any future finishes with an error; otherwise when all are done.
  case firstException
  /// When every future is done.
  case allCompleted
}

/// Waits for futures, as Python's `concurrent.futures.wait`: returns the futures that are done
/// (finished, failed or cancelled) and those that are not. A timeout returns; it does not throw
/// (a zero or negative one only polls).
/// Duplicates count once; the futures may come from several pools.
///
/// ```swift
/// let (done, notDone) = await wait(futures, timeout: .seconds(5), returnWhen: .firstException)
/// ```
public func wait<Output>(
  _ futures: some Sequence<ProcessFuture<Output>>, timeout: Duration? = nil,
  returnWhen condition: ReturnCondition = .allCompleted
) async -> (done: Set<ProcessFuture<Output>>, notDone: Set<ProcessFuture<Output>>) {
  await waitFor(Set(futures), timeout: timeout, returnWhen: condition)
}

/// ``wait(_:timeout:returnWhen:)->(Set<ProcessFuture<Output>>,_)`` for futures whose
/// output types differ, each wrapped in an ``AnyProcessFuture``.
///
/// ```swift
/// let futures = [AnyProcessFuture(try pool.submit(Square(), 3)), AnyProcessFuture(try pool.submit(Describe(), 4))]
/// let (done, notDone) = await wait(futures, timeout: .seconds(5))
/// ```
public func wait(
  _ futures: some Sequence<AnyProcessFuture>, timeout: Duration? = nil,
  returnWhen condition: ReturnCondition = .allCompleted
) async -> (done: Set<AnyProcessFuture>, notDone: Set<AnyProcessFuture>) {
  await waitFor(Set(futures), timeout: timeout, returnWhen: condition)
}

private func waitFor<Future: CompletionObservable & Hashable>(
  _ all: Set<Future>, timeout: Duration?, returnWhen condition: ReturnCondition
) async -> (done: Set<Future>, notDone: Set<Future>) {
  func partition() -> (Set<Future>, Set<Future>) {
    let done = all.filter(\.isCompleted)
    return (done, all.subtracting(done))
  }
  func satisfied() -> Bool {
    switch condition {
    case .allCompleted: return all.allSatisfy(\.isCompleted)
    case .firstCompleted: return all.isEmpty || all.contains(where: \.isCompleted)
    case .firstException: return all.allSatisfy(\.isCompleted) || all.contains(where: \.hasFailed)
    }
  }
  if satisfied() { return partition() }

  // Completions are counted as they come, so each wake-up checks the condition in constant time
  // (a scan of every future per completion made the wait quadratic).
  let signal = CompletionSignal()
  let counts = Mutex((completed: 0, failed: 0))
  let record = { @Sendable (future: Future) in
    counts.withLock {
      $0.completed += 1
      if future.hasFailed { $0.failed += 1 }
    }
    signal.fire()
  }
  let ids = all.map { future in
    let id = signal.nextID()
    if !future.watchCompletion(id, { record(future) }) { record(future) }
    return (future, id)
  }
  defer { for (future, id) in ids { future.stopWatching(id) } }
  func counted() -> Bool {
    let (completed, failed) = counts.withLock { ($0.completed, $0.failed) }
    switch condition {
    case .allCompleted: return completed == all.count
    case .firstCompleted: return completed > 0
    case .firstException: return completed == all.count || failed > 0
    }
  }
  let deadline = timeout.map { ContinuousClock.Instant.deadline(after: $0) }
  while !counted() {
    if let deadline, deadline <= .now { break }
    if Task.isCancelled { break }
    await signal.wait(until: deadline)
  }
  return partition()
}

/// Wakes an async waiter when any watched future completes, or at a deadline.
final class CompletionSignal: WakeSource {
  private let slot = Mutex(WakeSlot())
  /// Watcher ids are unique in the process, not per signal: a future keeps its watchers by id,
  /// so two waits on the same future (`wait` and `asCompleted` at once) must not share one.
  private static let ids = Atomic(0)

  func nextID() -> Int {
    Self.ids.add(1, ordering: .relaxed).newValue
  }

  func fire() {
    slot.withLock { $0.fire() }?.resume()
  }

  func withWakeSlot<R>(_ body: (inout WakeSlot) -> R) -> R {
    slot.withLock { body(&$0) }
  }

  /// Returns after a `fire` (one since the last wait), at the deadline, or on cancellation.
  func wait(until deadline: ContinuousClock.Instant?) async {
    await waitForFire(until: deadline, isolation: nil)
  }
}
