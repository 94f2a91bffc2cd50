import CProcessPoolShims

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// Every system call the package makes, wrapped once: each loops on `EINTR` and keeps `errno`.
enum Syscall {
  /// Runs `body` until it does not fail with `EINTR`; a `-1` result throws the `errno` it left.
  @inline(__always)
  static func retrying<T: FixedWidthInteger>(_ call: String, _ body: () -> T) throws(Errno) -> T {
    while true {
      let result = body()
      if result != -1 { return result }
      let code = errno
      if code != EINTR { throw Errno(code: code, call: call) }
    }
  }

  static func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) throws(Errno) -> Int {
    try retrying("read") { Glibc.read(fd, buffer, count) }
  }

  /// Sends without raising SIGPIPE: a dead peer is an `EPIPE` error, not a dead process.
  static func send(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int, nonBlocking: Bool) throws(Errno) -> Int {
    let flags = Int32(MSG_NOSIGNAL) | (nonBlocking ? Int32(MSG_DONTWAIT) : 0)
    return try retrying("send") { Glibc.send(fd, buffer, count, flags) }
  }

  /// Sends all of `bytes`, blocking as needed. A descriptor that is not a socket (a pipe, for a
  /// worker behind ssh) is written to instead.
  static func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(Errno) {
    var offset = 0
    while offset < bytes.count {
      do {
        offset += try send(fd, bytes.baseAddress! + offset, bytes.count - offset, nonBlocking: false)
      } catch  where error.code == ENOTSOCK {
        offset += try retrying("write") { Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset) }
      }
    }
  }

  static func close(_ fd: Int32) {
    // Linux closes the descriptor even when close reports EINTR, so it is never retried. EBADF
    // is a bug of ours, not a condition: a descriptor closed twice may by then be another
    // thread's new one of the same number, so it traps (as NIO and swift-subprocess do).
    if Glibc.close(fd) == -1 && errno == EBADF {
      preconditionFailure("close(\(fd)): EBADF, a descriptor closed twice or never opened")
    }
  }

  static func poll(_ fds: UnsafeMutablePointer<pollfd>, _ count: Int, timeoutMilliseconds: Int32) throws(Errno) -> Int32
  {
    try retrying("poll") { Glibc.poll(fds, nfds_t(count), timeoutMilliseconds) }
  }

  /// A new epoll instance (close-on-exec, above 2).
  static func epollCreate() throws(Errno) -> Int32 {
    try aboveStandardStreams(try retrying("epoll_create1") { pp_epoll_create() })
  }

  /// `epoll_ctl`: adds (`EPOLL_CTL_ADD`), changes or removes `fd` with `events` and `data`.
  static func epollControl(_ epoll: Int32, _ operation: Int32, _ fd: Int32, events: UInt32, data: UInt64)
    throws(Errno)
  {
    _ = try retrying("epoll_ctl") { pp_epoll_ctl(epoll, operation, fd, events, data) }
  }

  /// `epoll_wait` into `events`; returns how many are ready (0 on timeout).
  static func epollWait(
    _ epoll: Int32, _ events: UnsafeMutableBufferPointer<pp_epoll_event>, timeoutMilliseconds: Int32
  ) throws(Errno) -> Int {
    Int(
      try retrying("epoll_wait") {
        pp_epoll_wait(epoll, events.baseAddress!, Int32(clamping: events.count), timeoutMilliseconds)
      })
  }

  /// A connected stream socket pair, both ends close-on-exec (and above 2).
  static func socketPair() throws(Errno) -> (Int32, Int32) {
    var fds: [Int32] = [-1, -1]
    _ = try retrying("socketpair") {
      socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
    }
    return try aboveStandardStreams(fds[0], fds[1])
  }

  /// Both ends of a new pair (socket pair or pipe) moved above 2; both closed on failure.
  private static func aboveStandardStreams(_ first: Int32, _ second: Int32) throws(Errno) -> (Int32, Int32) {
    let moved: Int32
    do {
      moved = try aboveStandardStreams(first)
    } catch {
      close(second)
      throw error
    }
    do {
      return (moved, try aboveStandardStreams(second))
    } catch {
      close(moved)
      throw error
    }
  }

  /// `fd`, or a close-on-exec copy of it numbered 3 or more (the original closed) when it took a
  /// slot of stdin, stdout or stderr. A program started with those closed (a daemon) would
  /// otherwise find the pool's sockets there: its own writes to stderr, and the pool's log
  /// lines, would go into a worker's socket. Every descriptor the pool creates passes here.
  static func aboveStandardStreams(_ fd: Int32) throws(Errno) -> Int32 {
    guard fd >= 0 && fd <= 2 else { return fd }
    defer { close(fd) }
    return try retrying("fcntl") { fcntl(fd, F_DUPFD_CLOEXEC, 3) }
  }

  /// A non-blocking, close-on-exec socket pair that wakes the I/O thread. A socket rather than
  /// a pipe so a late wake-up after the thread ended is an `EPIPE`, not a SIGPIPE.
  static func wakeChannel() throws(Errno) -> (read: Int32, write: Int32) {
    let (read, write) = try socketPair()
    do {
      try setNonBlocking(read)
      try setNonBlocking(write)
    } catch {
      close(read)
      close(write)
      throw error
    }
    return (read, write)
  }

  /// A close-on-exec pipe whose read end is non-blocking (a worker's stderr).
  static func outputPipe() throws(Errno) -> (read: Int32, write: Int32) {
    var fds: [Int32] = [-1, -1]
    _ = try retrying("pipe2") { pp_pipe_cloexec(&fds) }
    (fds[0], fds[1]) = try aboveStandardStreams(fds[0], fds[1])
    do {
      try setNonBlocking(fds[0])
    } catch {
      close(fds[0])
      close(fds[1])
      throw error
    }
    return (fds[0], fds[1])
  }

  static func setCloseOnExec(_ fd: Int32) throws(Errno) {
    _ = try retrying("fcntl") { fcntl(fd, F_SETFD, FD_CLOEXEC) }
  }

  static func setNonBlocking(_ fd: Int32) throws(Errno) {
    let flags = try retrying("fcntl") { fcntl(fd, F_GETFL) }
    _ = try retrying("fcntl") { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
  }

  /// Sets the socket's send and receive buffer sizes (best effort: the kernel clamps them).
  static func setSocketBuffers(_ fd: Int32, bytes: Int32) {
    var size = bytes
    _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
  }

  /// Anonymous shared memory of `size` bytes, as a close-on-exec descriptor (memfd).
  static func sharedMemory(size: Int) throws(Errno) -> Int32 {
    let created = try retrying("memfd_create") { pp_memfd_create("processpool-ring") }
    let fd = try aboveStandardStreams(created)
    do {
      _ = try retrying("ftruncate") { ftruncate(fd, off_t(size)) }
    } catch {
      close(fd)
      throw error
    }
    return fd
  }

  /// Maps `size` bytes of `fd` from `offset` (a multiple of the page size) shared, readable and
  /// writable. With `reserve` false no memory is set aside for it (a large, mostly sparse region).
  static func mapShared(_ fd: Int32, size: Int, offset: Int = 0, reserve: Bool = true) throws(Errno)
    -> UnsafeMutableRawPointer
  {
    let flags = MAP_SHARED | (reserve ? 0 : MAP_NORESERVE)
    let address = mmap(nil, size, PROT_READ | PROT_WRITE, flags, fd, off_t(offset))
    guard let address, address != MAP_FAILED else { throw Errno(code: errno, call: "mmap") }
    return address
  }

  /// Sets the size of the file behind `fd` (a memfd: growing it allocates nothing).
  static func resize(_ fd: Int32, size: Int) throws(Errno) {
    _ = try retrying("ftruncate") { ftruncate(fd, off_t(size)) }
  }

  /// Leaves `size` bytes of a mapping out of core dumps (best effort): a crashing worker must not
  /// write gigabytes of shared regions, mostly holes, to a core file or a crash collector.
  static func excludeFromCoreDumps(_ address: UnsafeMutableRawPointer, size: Int) {
    _ = madvise(address, size, MADV_DONTDUMP)
  }

  /// Gives the memory behind `size` bytes of a shared mapping back to the system (`MADV_REMOVE`:
  /// the pages read as zeros afterwards, in every process that maps them). Best effort.
  static func discard(_ address: UnsafeMutableRawPointer, size: Int) {
    _ = madvise(address, size, MADV_REMOVE)
  }

  /// Asks for huge pages behind the whole 2 MiB pages of `size` bytes of private memory at
  /// `address`, before they are first written: filling them then takes a fault per 2 MiB instead
  /// of one per 4 KiB. Best effort (nothing where transparent huge pages are off).
  static func adviseHugePages(_ address: UnsafeMutableRawPointer, size: Int) {
    let huge = 1 << 21
    let start = (Int(bitPattern: address) + huge - 1) & ~(huge - 1)
    let end = (Int(bitPattern: address) + size) & ~(huge - 1)
    guard end > start, let aligned = UnsafeMutableRawPointer(bitPattern: start) else { return }
    _ = madvise(aligned, end - start, MADV_HUGEPAGE)
  }

  static func unmap(_ address: UnsafeMutableRawPointer, size: Int) {
    _ = munmap(address, size)
  }

  /// The size of the file behind `fd`.
  static func fileSize(_ fd: Int32) throws(Errno) -> Int {
    var info = stat()
    _ = try retrying("fstat") { fstat(fd, &info) }
    return Int(info.st_size)
  }

  /// Sleeps for about `nanoseconds` (a signal may end it early).
  static func sleep(nanoseconds: Int) {
    var request = timespec(tv_sec: nanoseconds / 1_000_000_000, tv_nsec: nanoseconds % 1_000_000_000)
    _ = nanosleep(&request, nil)
  }

  /// Lets another runnable thread have this processor (a spinning thread's courtesy).
  static func yieldProcessor() {
    _ = sched_yield()
  }

  /// Waits for `pid`; returns its raw wait status, or nil with `WNOHANG` when it still runs.
  static func waitPID(_ pid: pid_t, noHang: Bool) throws(Errno) -> Int32? {
    var status: Int32 = 0
    let result = try retrying("waitpid") { waitpid(pid, &status, noHang ? WNOHANG : 0) }
    return result == 0 ? nil : status
  }

  /// The process's soft limit on descriptors (RLIMIT_NOFILE), or nil when unlimited or unknown.
  static func descriptorLimit() -> Int? {
    var limit = rlimit()
    guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max,
      limit.rlim_cur < rlim_t(Int.max)
    else { return nil }
    return Int(limit.rlim_cur)
  }

  /// A pidfd of `pid` (close-on-exec): it becomes readable when the process exits.
  static func pidfdOpen(_ pid: pid_t) throws(Errno) -> Int32 {
    try aboveStandardStreams(try retrying("pidfd_open") { pp_pidfd_open(pid) })
  }

  /// Sends `signal` to the process of `pidfd`; a process that is already gone is not an error.
  static func signal(pidfd: Int32, _ signal: Int32) {
    _ = pp_pidfd_send_signal(pidfd, signal)
  }

  /// Sends `signal` to `pid`; a process that is already gone is not an error.
  static func kill(_ pid: pid_t, _ signal: Int32) {
    _ = Glibc.kill(pid, signal)
  }
}
