/// An owned descriptor, closed when the last holder lets go. The I/O thread and a thread that is
/// writing a frame may both hold it, so a worker's socket is never closed under a writer (and its
/// number never reused while a write is in flight).
final class Socket: Sendable {
  let fd: Int32
  init(_ fd: Int32) { self.fd = fd }
  deinit { Syscall.close(fd) }
}
