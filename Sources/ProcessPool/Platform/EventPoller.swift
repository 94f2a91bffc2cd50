import CProcessPoolShims

#if canImport(Glibc)
  import Glibc
#endif

/// An epoll instance: the I/O thread's set of watched descriptors, changed as workers come and
/// go (and by a writer that finds a socket full) instead of being rebuilt on every pass, so a
/// pass costs what its events cost, not what the number of workers does. Level-triggered.
/// Closed explicitly by the I/O thread when it ends, after every worker channel was closed.
final class EventPoller: Sendable {
  let fd: Int32

  /// What an event is about: the low bits of its data say which descriptor of a worker it is.
  enum Source: UInt64 {
    case wake = 0
    case socket = 1
    case standardError = 2
    case process = 3
  }

  init() throws(Errno) { fd = try Syscall.epollCreate() }

  /// The data of an event about `source` of worker `worker` (the wake-up pipe: worker 0).
  static func data(_ source: Source, worker: Int) -> UInt64 { UInt64(worker) << 2 | source.rawValue }

  /// The worker and source an event's data names.
  static func decode(_ data: UInt64) -> (source: Source, worker: Int) {
    (Source(rawValue: data & 3)!, Int(data >> 2))
  }

  static let readable = UInt32(EPOLLIN.rawValue)
  static let writable = UInt32(EPOLLOUT.rawValue)

  func add(_ descriptor: Int32, _ source: Source, worker: Int, events: UInt32 = readable) throws(Errno) {
    try Syscall.epollControl(
      fd, EPOLL_CTL_ADD, descriptor, events: events, data: Self.data(source, worker: worker))
  }

  /// Changes the events watched on a descriptor added before (nothing if it is watched no more:
  /// a worker's socket once it ended, while the worker is reaped).
  func modify(_ descriptor: Int32, _ source: Source, worker: Int, events: UInt32) {
    do {
      try Syscall.epollControl(
        fd, EPOLL_CTL_MOD, descriptor, events: events, data: Self.data(source, worker: worker))
    } catch {
      // Any other failure is a bug of ours.
      precondition(error.code == ENOENT, "epoll_ctl(MOD, \(descriptor)): \(error)")
    }
  }

  /// Stops watching `descriptor` (before it is closed: a copy of it in a forked child would
  /// otherwise keep it in the set).
  func remove(_ descriptor: Int32) {
    _ = try? Syscall.epollControl(fd, EPOLL_CTL_DEL, descriptor, events: 0, data: 0)
  }

  /// Waits for events; an error (none is expected) counts as none.
  func wait(into events: UnsafeMutableBufferPointer<pp_epoll_event>, timeoutMilliseconds: Int32) -> Int {
    (try? Syscall.epollWait(fd, events, timeoutMilliseconds: timeoutMilliseconds)) ?? 0
  }

  func close() { Syscall.close(fd) }
}
