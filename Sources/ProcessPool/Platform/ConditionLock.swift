#if canImport(Glibc)
  import Glibc
#endif

/// A pthread mutex and a monotonic-clock condition variable: what blocking waits
/// (`result(timeout:)`, the worker's frame queue, a blocking shutdown) sleep on.
///
/// `Synchronization.Mutex` has no condition variable, so this one is kept for the few places that
/// must put a thread to sleep.
final class ConditionLock: @unchecked Sendable {
  private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
  private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

  init() {
    pthread_mutex_init(mutex, nil)
    var attributes = pthread_condattr_t()
    pthread_condattr_init(&attributes)
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
    pthread_cond_init(condition, &attributes)
    pthread_condattr_destroy(&attributes)
  }

  deinit {
    pthread_cond_destroy(condition)
    pthread_mutex_destroy(mutex)
    condition.deallocate()
    mutex.deallocate()
  }

  func withLock<T>(_ body: () throws -> T) rethrows -> T {
    pthread_mutex_lock(mutex)
    defer { pthread_mutex_unlock(mutex) }
    return try body()
  }

  func broadcast() { pthread_cond_broadcast(condition) }

  /// Waits (with the lock held by the caller, inside `withLock`) until `ready()` holds or
  /// `deadline` (a monotonic instant, nil for none) passes. Returns whether `ready()` holds.
  func wait(until deadline: ContinuousClock.Instant?, _ ready: () -> Bool) -> Bool {
    var target = timespec()
    if let deadline {
      clock_gettime(CLOCK_MONOTONIC, &target)
      let remaining = ContinuousClock.now.duration(to: deadline)
      let (seconds, attoseconds) = max(remaining, .zero).components
      let nanoseconds = Int(target.tv_nsec) + Int(attoseconds / 1_000_000_000)
      target.tv_sec += Int(seconds) + nanoseconds / 1_000_000_000
      target.tv_nsec = nanoseconds % 1_000_000_000
    }
    while !ready() {
      if deadline == nil {
        pthread_cond_wait(condition, mutex)
      } else if pthread_cond_timedwait(condition, mutex, &target) == ETIMEDOUT {
        return ready()
      }
    }
    return true
  }
}
