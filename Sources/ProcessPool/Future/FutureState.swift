/// CPython's future states. `cancelled` is "cancelled, not yet seen by the pool";
/// `cancelledAndNotified` is "the pool knows", which is when `wait` and `asCompleted` count it.
enum FuturePhase: Equatable, Sendable {
  case pending, running, cancelled, cancelledAndNotified, finished

  var isCancelled: Bool { self == .cancelled || self == .cancelledAndNotified }
  var isDone: Bool { self != .pending && self != .running }
}

/// The mutable part of a future, kept under its mutex. Transitions return the effects to run
/// after the lock is released (continuations, callbacks), so no user code runs under it.
struct FutureState<Output: Sendable>: ~Copyable {
  // `outcome` before `phase`: the phase byte fills the outcome's tail padding, so the state is a
  // word smaller (every submitted task holds one future).
  var outcome: Result<Output, any Error>?
  var phase: FuturePhase = .pending
  /// Usually one (the task awaiting the value): a list, not a dictionary, so registering it
  /// costs no hashing and finishing hands the list over as it is.
  var waiters: [Waiter] = []
  var abandoned: Set<Int> = []
  var nextWaiterID = 0
  var callbacks: [@Sendable (ProcessFuture<Output>) throws -> Void] = []
  /// Internal observers (`wait`, `asCompleted`, blocking waits): told when the future counts as
  /// completed for them, i.e. finished or cancelled-and-notified.
  var watchers: [Int: @Sendable () -> Void] = [:]
  /// Blocked threads (`result(timeout:)`): told when there is an outcome, cancelled included.
  var wakeups: [Int: @Sendable () -> Void] = [:]

  struct Waiter {
    let id: Int
    let continuation: CheckedContinuation<Output, any Error>
  }

  enum Registration {
    case registered
    case outcome(Result<Output, any Error>)
    case abandoned
  }

  mutating func allocateWaiterID() -> Int {
    nextWaiterID += 1
    return nextWaiterID
  }

  mutating func register(_ id: Int, _ continuation: CheckedContinuation<Output, any Error>) -> Registration {
    if abandoned.remove(id) != nil { return .abandoned }
    if let outcome { return .outcome(outcome) }
    waiters.append(Waiter(id: id, continuation: continuation))
    return .registered
  }

  /// The awaiting task was cancelled: hands back its continuation, or remembers the id when the
  /// continuation is not registered yet.
  mutating func abandon(_ id: Int) -> CheckedContinuation<Output, any Error>? {
    if outcome != nil { return nil }
    if let index = waiters.firstIndex(where: { $0.id == id }) { return waiters.remove(at: index).continuation }
    abandoned.insert(id)
    return nil
  }

  /// Adds an observer unless the future already counts as completed (then returns false).
  mutating func watch(_ id: Int, _ watcher: @escaping @Sendable () -> Void) -> Bool {
    if phase == .finished || phase == .cancelledAndNotified { return false }
    watchers[id] = watcher
    return true
  }

  mutating func cancel() -> FutureEffects<Output>? {
    guard phase == .pending else { return nil }
    phase = .cancelled
    return finish(
      .failure(ProcessPoolError(.cancelled, "the future was cancelled before it started")), notifyWatchers: false)
  }

  /// A running task is cancelled by stopping its worker: it counts as cancelled and notified.
  mutating func cancelRunning() -> FutureEffects<Output>? {
    guard phase == .running else { return nil }
    phase = .cancelledAndNotified
    return finish(
      .failure(ProcessPoolError(.cancelled, "the task was cancelled while running; its worker was stopped")),
      notifyWatchers: true)
  }

  /// The pool takes the task: pending becomes running (and stays so when requeued, work a dead
  /// worker had not started). False when it was cancelled or is done: the pool skips it.
  /// (Apart from `notifyCancel` so the common path returns no generic value.)
  mutating func setRunning() -> Bool {
    switch phase {
    case .pending:
      phase = .running
      return true
    case .running:
      return true
    default:
      return false
    }
  }

  /// A cancelled future the pool skips becomes cancelled-and-notified (the effects tell `wait`
  /// and `asCompleted`); nil when it was not waiting for that.
  mutating func notifyCancel() -> FutureEffects<Output>? {
    guard phase == .cancelled else { return nil }
    phase = .cancelledAndNotified
    return FutureEffects(watchers: takeWatchers())
  }

  /// Finishes with an outcome; nil when the future is already done (the outcome is kept).
  mutating func complete(_ result: Result<Output, any Error>) -> FutureEffects<Output>? {
    guard phase == .pending || phase == .running else { return nil }
    phase = .finished
    return finish(result, notifyWatchers: true)
  }

  private mutating func finish(_ result: Result<Output, any Error>, notifyWatchers: Bool) -> FutureEffects<Output> {
    outcome = result
    let continuations = waiters
    waiters = []
    let callbacks = self.callbacks
    self.callbacks = []
    let woken = Array(wakeups.values)
    wakeups = [:]
    return FutureEffects(
      continuations: continuations, outcome: result, callbacks: callbacks,
      watchers: (notifyWatchers ? takeWatchers() : []) + woken)
  }

  private mutating func takeWatchers() -> [@Sendable () -> Void] {
    let taken = Array(watchers.values)
    watchers = [:]
    return taken
  }
}

/// What a transition asks to be done once the future's lock is released.
struct FutureEffects<Output: Sendable> {
  var continuations: [FutureState<Output>.Waiter] = []
  var outcome: Result<Output, any Error>? = nil
  var callbacks: [@Sendable (ProcessFuture<Output>) throws -> Void] = []
  var watchers: [@Sendable () -> Void] = []

  func run(_ future: ProcessFuture<Output>) {
    if let outcome {
      for waiter in continuations { waiter.continuation.resume(with: outcome) }
    }
    for callback in callbacks { Self.invoke(callback, future) }
    for watcher in watchers { watcher() }
  }

  static func invoke(_ callback: @Sendable (ProcessFuture<Output>) throws -> Void, _ future: ProcessFuture<Output>) {
    do {
      try callback(future)
    } catch {
      ProcessPoolLog.emit(.error, "exception calling callback for \(future): \(error)")
    }
  }
}
