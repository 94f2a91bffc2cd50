import Synchronization

/// The futures in the order they complete (finish, fail, or are cancelled), as Python's
/// `concurrent.futures.as_completed`. Those already done come first; duplicates are yielded
/// once; the futures may come from several pools. With a `timeout`, the iteration throws
/// ``ProcessPoolError/Code/timedOut`` ("N (of M) futures unfinished") once it passes; a zero or
/// negative `timeout` yields those already done, then throws. The sequence keeps no reference to
/// a future it has yielded.
///
/// ```swift
/// for try await future in asCompleted(futures, timeout: .seconds(30)) {
///     print(try await future.value)
/// }
/// ```
public func asCompleted<Output>(
  _ futures: some Sequence<ProcessFuture<Output>>, timeout: Duration? = nil
) -> AsCompletedSequence<Output> {
  AsCompletedSequence(storage: AsCompletedStorage(Array(futures), timeout: timeout))
}

/// The sequence ``asCompleted(_:timeout:)`` returns. It starts watching the futures (and its
/// timeout starts) when it is made; iterate it once.
public struct AsCompletedSequence<Output: Sendable>: AsyncSequence, Sendable {
  /// Each element is one of the futures passed in, once, when it has finished.
  public typealias Element = ProcessFuture<Output>
  let storage: AsCompletedStorage<Output>

  /// The iterator; make only one.
  public func makeAsyncIterator() -> Iterator {
    Iterator(storage: storage)
  }

  /// Yields the next completed future.
  public struct Iterator: AsyncIteratorProtocol {
    let storage: AsCompletedStorage<Output>

    /// The next finished future, or nil when all have been yielded. Throws
    /// ``ProcessPoolError/Code/timedOut`` when the timeout passes first.
    public mutating func next() async throws -> ProcessFuture<Output>? {
      try await storage.next()
    }
  }
}

/// The futures not yet completed, and those completed but not yet yielded, under one lock.
/// Watchers hold only a weak reference to it, and a future leaves it when yielded.
final class AsCompletedStorage<Output: Sendable>: Sendable {
  private struct State {
    var pending: [ObjectIdentifier: (ProcessFuture<Output>, Int)] = [:]
    var ready: [ProcessFuture<Output>] = []
    var total = 0
  }
  private let state = Mutex(State())
  private let signal = CompletionSignal()
  private let deadline: ContinuousClock.Instant?

  init(_ futures: [ProcessFuture<Output>], timeout: Duration?) {
    deadline = timeout.map { ContinuousClock.Instant.deadline(after: $0) }
    var seen = Set<ObjectIdentifier>()
    var ready: [ProcessFuture<Output>] = []
    var waiting: [ProcessFuture<Output>] = []
    for future in futures where seen.insert(ObjectIdentifier(future)).inserted {
      if future.isCompleted { ready.append(future) } else { waiting.append(future) }
    }
    state.withLock {
      $0.ready = ready
      $0.total = seen.count
    }
    for future in waiting {
      let id = signal.nextID()
      let key = ObjectIdentifier(future)
      state.withLock { $0.pending[key] = (future, id) }
      let watching = future.watchCompletion(id) { [weak self] in self?.completed(key) }
      if !watching { completed(key) }
    }
  }

  deinit {
    let pending = state.withLock { $0.pending.values }
    for (future, id) in pending { future.stopWatching(id) }
  }

  private func completed(_ key: ObjectIdentifier) {
    state.withLock { state in
      if let (future, _) = state.pending.removeValue(forKey: key) { state.ready.append(future) }
    }
    signal.fire()
  }

  func next() async throws -> ProcessFuture<Output>? {
    while true {
      let (future, unfinished, total) = state.withLock { state -> (ProcessFuture<Output>?, Int, Int) in
        if !state.ready.isEmpty { return (state.ready.removeFirst(), 0, 0) }
        return (nil, state.pending.count, state.total)
      }
      if let future { return future }
      if unfinished == 0 { return nil }
      if let deadline, deadline <= .now {
        throw ProcessPoolError(.timedOut, "\(unfinished) (of \(total)) futures unfinished")
      }
      try Task.checkCancellation()
      await signal.wait(until: deadline)
    }
  }
}
