/// Bytes read from a socket, cut into frames. Keeps partial frames across reads and compacts
/// lazily so a stream of small frames costs no copying.
struct FrameBuffer {
  /// Valid bytes are `storage[start..<end]`; the rest is room for the next read.
  private var storage = Self.room(1 << 16)
  private var start = 0
  private var end = 0

  /// Reads what `fd` has. Returns false at end of stream; a non-blocking socket with nothing to
  /// read throws `EAGAIN`.
  mutating func fill(from fd: Int32, waiting: Bool = true) throws(Errno) -> Bool {
    if start == end {
      start = 0
      end = 0
      // Give back the memory of a large payload once it has been consumed.
      if storage.count > 1 << 22 { storage = Self.room(1 << 16) }
    }
    if storage.count - end < 1 << 14 {
      // Make room: slide the partial frame down; grow (once, to fit the whole pending frame
      // when its header is in) only when that is not enough.
      if start > 0 {
        storage.withUnsafeMutableBytes { bytes in
          bytes.baseAddress!.copyMemory(from: bytes.baseAddress! + start, byteCount: end - start)
        }
        end -= start
        start = 0
      }
      if storage.count - end < 1 << 14 {
        var wanted = storage.count * 2
        if end >= 4 {
          let length = storage.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self))) }
          wanted = max(wanted, min(length, Frame.maximumSize) + 4 + (1 << 14))
        }
        var grown = Self.room(wanted)
        grown.withUnsafeMutableBytes { target in
          storage.withUnsafeBytes { source in
            target.baseAddress!.copyMemory(from: source.baseAddress!, byteCount: end)
          }
        }
        storage = grown
      }
    }
    let room = storage.count - end
    let offset = end
    let got = try storage.withUnsafeMutableBytes { bytes in
      Result { () throws(Errno) -> Int in
        waiting
          ? try Syscall.read(fd, bytes.baseAddress! + offset, room)
          : try Syscall.receiveNow(fd, bytes.baseAddress! + offset, room)
      }
    }.get()
    end += got
    return got > 0
  }

  /// `count` bytes left as they come: only bytes a read wrote are ever looked at, and a page is
  /// touched only once a read reaches it (zeroing 64 KiB cost a new worker 16 page faults).
  private static func room(_ count: Int) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
  }

  /// Frames cut by `drainBatch`, kept to reuse the array's storage.
  private var cut: [Frame.Header] = []

  /// Calls `body(kind, id, payload)` for each complete frame, up to one that `stoppingBefore`
  /// holds back (it stays for a later call). Throws on a bad length or kind, after the frames
  /// before it were handled.
  mutating func drainFrames(
    stoppingBefore: ((Frame.Kind, UInt64) -> Bool)? = nil,
    _ body: (Frame.Kind, UInt64, UnsafeRawBufferPointer) throws -> Void
  ) throws {
    try drainBatch(stoppingBefore: stoppingBefore) { frames, bytes in
      for frame in frames { try body(frame.kind, frame.id, UnsafeRawBufferPointer(rebasing: bytes[frame.payload])) }
    }
  }

  /// Cuts every complete frame and calls `body` once with all of them and the bytes their
  /// payload ranges point into (the worker runs a batch of jobs in one task). Throws on a bad
  /// length or kind, after the frames before it were handled.
  mutating func drainBatch(
    stoppingBefore: ((Frame.Kind, UInt64) -> Bool)? = nil,
    _ body: ([Frame.Header], UnsafeRawBufferPointer) throws -> Void
  ) throws {
    cut.removeAll(keepingCapacity: true)
    var failure: (any Error)?
    storage.withUnsafeBytes { bytes in
      while end - start >= Frame.headerSize {
        let header: (kind: Frame.Kind, id: UInt64, size: Int)
        do {
          header = try Frame.header(in: bytes, at: start)
        } catch {
          failure = error
          return
        }
        guard end - start >= header.size, stoppingBefore?(header.kind, header.id) != true else { return }
        cut.append(
          Frame.Header(kind: header.kind, id: header.id, payload: start + Frame.headerSize..<start + header.size))
        start += header.size
      }
    }
    if !cut.isEmpty {
      // The storage is not touched until the next `fill`, so the ranges stay valid in `body`.
      try storage.withUnsafeBytes { try body(cut, $0) }
    }
    if let failure { throw failure }
  }
}
