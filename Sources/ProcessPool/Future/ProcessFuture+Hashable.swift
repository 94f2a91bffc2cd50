/// Futures are compared by identity, so they can live in sets (as `wait` returns them).
extension ProcessFuture: Hashable {
  /// Whether both are the same future (identity, not equal outputs).
  public static func == (lhs: ProcessFuture, rhs: ProcessFuture) -> Bool { lhs === rhs }
  /// Hashes the future's identity.
  public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }
}

extension ProcessFuture {
  /// Done as `wait` and `asCompleted` count it: finished, or cancelled and seen by the pool.
  var isCompleted: Bool {
    state.withLock { $0.phase == .finished || $0.phase == .cancelledAndNotified }
  }

  /// Finished with an error (not cancelled).
  var hasFailed: Bool {
    state.withLock { state in
      guard state.phase == .finished, case .failure? = state.outcome else { return false }
      return true
    }
  }

  /// Calls `watcher` once the future is completed (as above); false if it already is.
  func watchCompletion(_ id: Int, _ watcher: @escaping @Sendable () -> Void) -> Bool {
    state.withLock { $0.watch(id, watcher) }
  }

  func stopWatching(_ id: Int) {
    state.withLock { _ = $0.watchers.removeValue(forKey: id) }
  }
}
