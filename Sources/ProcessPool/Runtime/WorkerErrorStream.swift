import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// A local worker's stderr as the I/O thread reads it: forwarded to this process's stderr a
/// whole line at a time with the worker's pid in front (so lines of several workers never mix),
/// and its last bytes kept for the crash report if the worker dies. Its descriptor is the
/// worker's channel's, closed with it.
final class WorkerErrorStream {
  let worker: Int
  let pid: Int32
  /// The read end of the worker's stderr pipe (non-blocking).
  let fd: Int32
  let forward: Bool
  /// The pipe reached end of stream (the worker, and whatever inherited its stderr, is gone).
  private(set) var closed = false
  /// The end of a line not yet complete (forwarding only).
  private var partial: [UInt8] = []
  /// The last `tailLimit` bytes written.
  private var tail: [UInt8] = []
  private var trimmed = false

  /// How much of the end of a worker's stderr a crash report keeps.
  static let tailLimit = 8192
  /// A line longer than this is forwarded in pieces.
  static let lineLimit = 4096
  /// Where forwarded lines go: this process's stderr (tests point it at a pipe).
  static let destination = Atomic<Int32>(2)

  init(worker: Int, pid: Int32, fd: Int32, forward: Bool) {
    self.worker = worker
    self.pid = pid
    self.fd = fd
    self.forward = forward
  }

  /// Reads what the pipe holds now, without blocking.
  func read() {
    var scratch = [UInt8](repeating: 0, count: 4096)
    while !closed {
      let result = scratch.withUnsafeMutableBytes { buffer in
        Result { () throws(Errno) in try Syscall.read(fd, buffer.baseAddress!, buffer.count) }
      }
      let count: Int
      switch result {
      case .success(let read): count = read
      case .failure(let error):
        // EAGAIN: nothing more now. Anything else: the pipe is unusable, as at its end.
        if error.code != EAGAIN && error.code != EWOULDBLOCK { closed = true }
        return
      }
      if count == 0 {
        closed = true
        return
      }
      consume(scratch[0..<count])
      if count < scratch.count { return }
    }
  }

  private func consume(_ bytes: ArraySlice<UInt8>) {
    tail.append(contentsOf: bytes)
    if tail.count > Self.tailLimit {
      tail.removeFirst(tail.count - Self.tailLimit)
      trimmed = true
    }
    guard forward else { return }
    partial.append(contentsOf: bytes)
    guard let lastNewline = partial.lastIndex(of: UInt8(ascii: "\n")) else {
      if partial.count >= Self.lineLimit { emit(partial + [UInt8(ascii: "\n")], upTo: partial.count + 1) }
      return
    }
    emit(partial, upTo: lastNewline + 1)
  }

  /// Writes `bytes[..<end]` (whole lines), each line prefixed, in one write; keeps the rest.
  private func emit(_ bytes: [UInt8], upTo end: Int) {
    let prefix = Array("[worker \(pid)] ".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(end + prefix.count * 4)
    var lineStart = 0
    for index in 0..<end where bytes[index] == UInt8(ascii: "\n") {
      out += prefix
      out += bytes[lineStart...index]
      lineStart = index + 1
    }
    partial = end < bytes.count ? Array(bytes[end...]) : []
    out.withUnsafeBytes { try? Syscall.sendAll(Self.destination.load(ordering: .relaxed), $0) }
  }

  /// The worker is gone and reaped: reads what is left, forwards an unfinished last line, and
  /// returns the tail (nil when the worker wrote nothing but white space).
  func finish() -> String? {
    read()
    if forward && !partial.isEmpty { emit(partial + [UInt8(ascii: "\n")], upTo: partial.count + 1) }
    var bytes = tail[...]
    // A tail cut in the middle of a line starts at the next one.
    if trimmed, let newline = bytes.firstIndex(of: UInt8(ascii: "\n")) { bytes = bytes[(newline + 1)...] }
    let text = String(decoding: bytes, as: UTF8.self)
    guard text.contains(where: { !$0.isWhitespace }) else { return nil }
    return text
  }
}
