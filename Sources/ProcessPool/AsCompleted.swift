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

/// ``asCompleted(_:timeout:)->AsCompletedSequence<Output>`` for futures whose
/// output types differ, each wrapped in an ``AnyProcessFuture``.
///
/// ```swift
/// let futures = [AnyProcessFuture(try pool.submit(Square(), 3)), AnyProcessFuture(try pool.submit(Describe(), 4))]
/// for try await future in asCompleted(futures) { print(try await future.value) }
/// ```
public func asCompleted(
  _ futures: some Sequence<AnyProcessFuture>, timeout: Duration? = nil
) -> AnyAsCompletedSequence {
  AnyAsCompletedSequence(storage: AsCompletedStorage(Array(futures), timeout: timeout))
}

/// The sequence ``asCompleted(_:timeout:)->AsCompletedSequence<Output>`` returns. It starts watching the futures (and its
/// timeout starts) when it is made; iterate it once.
public struct AsCompletedSequence<Output: Sendable>: AsyncSequence, Sendable {
  /// Each element is one of the futures passed in, once, when it has finished.
  public typealias Element = ProcessFuture<Output>
  let storage: AsCompletedStorage<ProcessFuture<Output>>

  /// The iterator; make only one.
  public func makeAsyncIterator() -> Iterator {
    Iterator(storage: storage)
  }

  /// Yields the next completed future.
  public struct Iterator: AsyncIteratorProtocol {
    let storage: AsCompletedStorage<ProcessFuture<Output>>

    /// The next finished future, or nil when all have been yielded. Throws
    /// ``ProcessPoolError/Code/timedOut`` when the timeout passes first.
    public mutating func next() async throws -> ProcessFuture<Output>? {
      try await storage.next(isolation: nil)
    }

    /// What `for try await` calls: runs on the caller's executor, so a future that is already
    /// done is handed over without a hop to the global executor and back.
    public mutating func next(isolation actor: isolated (any Actor)?) async throws(any Error) -> ProcessFuture<Output>?
    {
      try await storage.next(isolation: actor)
    }
  }
}

/// The sequence ``asCompleted(_:timeout:)->AnyAsCompletedSequence`` returns: the
/// futures as they complete, still wrapped. It starts watching them when it is made; iterate
/// it once.
public struct AnyAsCompletedSequence: AsyncSequence, Sendable {
  /// Each element is one of the futures passed in, once, when it has finished.
  public typealias Element = AnyProcessFuture
  let storage: AsCompletedStorage<AnyProcessFuture>

  /// The iterator; make only one.
  public func makeAsyncIterator() -> Iterator {
    Iterator(storage: storage)
  }

  /// Yields the next completed future.
  public struct Iterator: AsyncIteratorProtocol {
    let storage: AsCompletedStorage<AnyProcessFuture>

    /// The next finished future, or nil when all have been yielded. Throws
    /// ``ProcessPoolError/Code/timedOut`` when the timeout passes first.
    public mutating func next() async throws -> AnyProcessFuture? {
      try await storage.next(isolation: nil)
    }

    /// What `for try await` calls: runs on the caller's executor, so a future that is already
    /// done is handed over without a hop to the global executor and back.
    public mutating func next(isolation actor: isolated (any Actor)?) async throws(any Error) -> AnyProcessFuture? {
      try await storage.next(isolation: actor)
    }
  }
}

/// The futures not yet completed, and those completed but not yet yielded, under one lock.
/// Watchers hold only a weak reference to it, and a future leaves it when yielded.
final class AsCompletedStorage<Future: CompletionObservable & Hashable>: Sendable {
  private struct State {
    var pending: [Future: Int] = [:]
    /// Finished and not yet yielded from `readyHead` on (popped by index: linear in all).
    var ready: [Future] = []
    var readyHead = 0
    var total = 0
  }
  private let state = Mutex(State())
  private let signal = CompletionSignal()
  private let deadline: ContinuousClock.Instant?

  init(_ futures: [Future], timeout: Duration?) {
    deadline = timeout.map { ContinuousClock.Instant.deadline(after: $0) }
    var seen = Set<Future>()
    var ready: [Future] = []
    var waiting: [Future] = []
    for future in futures where seen.insert(future).inserted {
      if future.isCompleted { ready.append(future) } else { waiting.append(future) }
    }
    state.withLock {
      $0.ready = ready
      $0.total = seen.count
    }
    for future in waiting {
      let id = signal.nextID()
      state.withLock { $0.pending[future] = id }
      let watching = future.watchCompletion(id) { [weak self] in self?.completed(future) }
      if !watching { completed(future) }
    }
  }

  deinit {
    let pending = state.withLock { $0.pending }
    for (future, id) in pending { future.stopWatching(id) }
  }

  private func completed(_ future: Future) {
    state.withLock { state in
      if state.pending.removeValue(forKey: future) != nil { state.ready.append(future) }
    }
    signal.fire()
  }

  func next(isolation: isolated (any Actor)?) async throws -> Future? {
    while true {
      let (future, unfinished, total) = state.withLock { state -> (Future?, Int, Int) in
        if state.readyHead < state.ready.count {
          let future = state.ready[state.readyHead]
          state.readyHead += 1
          if state.readyHead == state.ready.count {
            state.ready.removeAll(keepingCapacity: true)
            state.readyHead = 0
          }
          return (future, 0, 0)
        }
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
