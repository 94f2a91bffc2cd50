@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// A gate for tasks running in workers: a listening Unix socket. Each `WaitForGate` task connects
/// (the test learns it started) and blocks until `open()` writes to it. No sleeps, no polling.
final class TestGate: @unchecked Sendable {
  let path: String
  private let listener: Int32
  private var arrivals: [Int32] = []
  private var closed = false

  init() {
    path = "/tmp/pp-gate-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
      for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
    }
    _ = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
      }
    }
    listen(listener, 128)
  }

  /// Waits until `count` more tasks have arrived at the gate (at most 60 s; returns false then).
  /// The blocking wait runs on a thread of its own: blocking the cooperative pool (two threads
  /// here) could starve the very continuations the test is waiting for.
  @discardableResult
  func waitForArrivals(_ count: Int) async -> Bool {
    await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
      do {
        try OSThread.start(name: "test-gate") { continuation.resume(returning: self.blockingWait(count)) }
      } catch {
        continuation.resume(returning: false)
      }
    }
  }

  private func blockingWait(_ count: Int) -> Bool {
    for _ in 0..<count {
      var descriptor = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
      guard poll(&descriptor, 1, 60_000) == 1 else { return false }
      let connection = accept(listener, nil, nil)
      guard connection >= 0 else { return false }
      arrivals.append(connection)
    }
    return true
  }

  /// Releases every task that has arrived.
  func open() {
    for connection in arrivals {
      var byte: UInt8 = 1
      _ = send(connection, &byte, 1, Int32(MSG_NOSIGNAL))
      Glibc.close(connection)
    }
    arrivals = []
  }

  /// Releases everything and removes the socket: tasks that have not arrived yet (or whose
  /// connection was never accepted) return at once. Closing twice does nothing.
  func close() {
    guard !closed else { return }
    closed = true
    open()
    Glibc.close(listener)
    unlink(path)
  }

  var task: WaitForGate { WaitForGate(path: path) }
}
