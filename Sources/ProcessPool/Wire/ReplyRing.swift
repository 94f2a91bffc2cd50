import CProcessPoolShims

#if canImport(Glibc)
  import Glibc
#endif

/// Replies from a local worker to its parent through memory they share, instead of a socket
/// write per reply.
///
/// A worker must hand over each reply before it starts its next job: a reply held back would be
/// lost if that job crashed, and the crash blamed on a job that had finished. Written into shared
/// memory, a reply is handed over without a system call and outlives the worker. The parent reads
/// the ring whenever it is awake, and before it handles a worker's end; the worker wakes it (a
/// `wake` frame on the socket) only when it sleeps (`parentSleeping`, checked after a full fence
/// on both sides, so no reply waits unseen).
///
/// Layout: a header page (`tail`, written by the worker; `head`, by the parent;
/// `parentSleeping`), then `capacity` bytes of frames as on the socket. A frame never wraps:
/// one that does not fit before the end starts again at offset 0, and where it would have
/// started the worker writes `UInt32.max` if a frame header fits there. A results frame too big
/// for the ring goes on the socket, announced in the ring by a `resultsOnSocket` frame, so the
/// parent takes the results of both in the order the jobs ran.
final class ReplyRing: @unchecked Sendable {
  static let headerPage = 4096
  static let capacity = 1 << 20
  private static let tailOffset = 0
  private static let headOffset = 64
  private static let sleepingOffset = 128
  /// A frame in the ring is at most this big; a bigger results frame goes on the socket.
  static var largestFrame: Int { capacity / 4 }
  /// Room a `resultsOnSocket` frame needs, wrap included.
  private static let markerRoom = 2 * Frame.headerSize

  private let base: UnsafeMutableRawPointer
  private var data: UnsafeMutableRawPointer { base + Self.headerPage }
  private static var mappedSize: Int { headerPage + capacity }
  /// The regions for large values that follow the ring in its memfd (see `SharedValues`); nil
  /// when they could not be made (values then go through the socket).
  let values: SharedValues?

  /// Set by `unmap`; nothing is read or written after it.
  private var unmapped = false

  private init(base: UnsafeMutableRawPointer, values: SharedValues?) {
    self.base = base
    self.values = values
  }

  /// Gives the memory back now (the parent, once the worker is reaped and its channel closed),
  /// not when the last reference goes.
  func unmap() {
    precondition(!unmapped, "a reply ring unmapped twice")
    unmapped = true
    Syscall.unmap(base, size: Self.mappedSize)
  }

  deinit { if !unmapped { Syscall.unmap(base, size: Self.mappedSize) } }

  /// The parent's side: a new ring and the descriptor to hand to the worker (close it after).
  static func create() throws(Errno) -> (ring: ReplyRing, fd: Int32) {
    // The file gets its whole size at once, the regions included (a call fewer per worker);
    // where that is refused, the ring alone.
    let whole =
      SharedValues.unavailable.load(ordering: .relaxed)
      ? nil : try? Syscall.sharedMemory(size: mappedSize + SharedValues.mappedSize)
    let fd: Int32
    if let whole { fd = whole } else { fd = try Syscall.sharedMemory(size: mappedSize) }
    do {
      return (
        ReplyRing(base: try Syscall.mapShared(fd, size: mappedSize), values: whole == nil ? nil : sharedValues(fd)), fd
      )
    } catch {
      Syscall.close(fd)
      throw error
    }
  }

  /// The regions for large values, after the ring in `fd` (already sized for them), or nil
  /// (and `fd` cut back to the ring's size, which tells the worker) when they cannot be
  /// mapped: an address space limit.
  private static func sharedValues(_ fd: Int32) -> SharedValues? {
    do {
      return try SharedValues.map(fd, at: mappedSize)
    } catch {
      try? Syscall.resize(fd, size: mappedSize)
      return nil
    }
  }

  /// The worker's side: maps the ring the parent made, and the regions for large values when
  /// the parent made them (the descriptor can be closed after).
  static func map(_ fd: Int32) throws(Errno) -> ReplyRing {
    let size = try Syscall.fileSize(fd)
    guard size == mappedSize || size == mappedSize + SharedValues.mappedSize else {
      throw Errno(code: EINVAL, call: "mmap")
    }
    let values = size == mappedSize ? nil : try SharedValues.map(fd, at: mappedSize)
    return ReplyRing(base: try Syscall.mapShared(fd, size: mappedSize), values: values)
  }

  fileprivate var publishedTail: UInt64 { pp_load_acquire_u64(base + Self.tailOffset) }
  fileprivate var consumedHead: UInt64 { pp_load_acquire_u64(base + Self.headOffset) }
  fileprivate func publish(tail: UInt64) { pp_store_release_u64(base + Self.tailOffset, tail) }
  fileprivate func consume(head: UInt64) { pp_store_release_u64(base + Self.headOffset, head) }

  // MARK: Parent

  /// Set before the parent sleeps (then it looks at the ring once more), cleared when it wakes.
  func setParentSleeping(_ sleeping: Bool) { pp_store_u32(base + Self.sleepingOffset, sleeping ? 1 : 0) }

  /// The parent's reading position. Frames handed out stay valid until `release`, which gives
  /// their room back to the worker (a batch of results is handled under one lock).
  struct Reader {
    let ring: ReplyRing
    /// Where the worker may write again (published to it by `release`).
    private var head: UInt64 = 0
    /// Where the next frame is read.
    private var cursor: UInt64 = 0
    /// `resultsOnSocket` frames read whose results have not come off the socket yet.
    var expectedOnSocket = 0

    init(_ ring: ReplyRing) { self.ring = ring }

    var hasFrames: Bool { ring.publishedTail != cursor }

    /// The next whole frame, or nil when the worker has published nothing more. Throws when the
    /// published bytes do not hold a well-formed frame.
    mutating func next() throws(WireError) -> (header: Frame.Header, bytes: UnsafeRawBufferPointer)? {
      // The worker writes the tail: a value behind the reader or past the room it was given is
      // a broken worker, reported as such, never an overflow here.
      let tail = ring.publishedTail
      guard tail >= cursor, tail &- head <= UInt64(ReplyRing.capacity) else {
        throw WireError("reply ring tail out of bounds")
      }
      while cursor < tail {
        let offset = Int(cursor % UInt64(ReplyRing.capacity))
        let left = ReplyRing.capacity - offset
        if left < Frame.headerSize || ring.data.loadUnaligned(fromByteOffset: offset, as: UInt32.self) == .max {
          cursor += UInt64(left)
          // A writer skips a remainder only to write a frame after it.
          guard cursor < tail else { throw WireError("reply ring tail inside a skipped remainder") }
          continue
        }
        let bytes = UnsafeRawBufferPointer(start: ring.data + offset, count: min(left, Int(tail - cursor)))
        guard bytes.count >= Frame.headerSize else { throw WireError("a partial frame in the reply ring") }
        let (kind, id, size) = try Frame.header(in: bytes, at: 0)
        guard size <= bytes.count else { throw WireError("a partial frame in the reply ring") }
        cursor += UInt64(size)
        return (Frame.Header(kind: kind, id: id, payload: Frame.headerSize..<size), bytes)
      }
      return nil
    }

    /// Gives the room of every frame `next` returned back to the worker; their bytes are not
    /// to be read after this.
    mutating func release() {
      head = cursor
      ring.consume(head: head)
    }
  }

  // MARK: Worker

  /// Whether the parent sleeps, after the worker published; clears the flag (one `wake` per
  /// sleep).
  func parentNeedsWaking() -> Bool {
    pp_fence()
    return pp_exchange_u32(base + Self.sleepingOffset, 0) == 1
  }

  /// The worker's writing position; `tail` is this process's copy of it.
  struct Writer {
    let ring: ReplyRing
    private var tail: UInt64 = 0

    init(_ ring: ReplyRing) { self.ring = ring }

    /// Copies `frame` in and publishes it, waiting for room while the parent catches up (`wake`
    /// rings the parent if it sleeps). False for a frame too big for the ring.
    mutating func publish(_ frame: UnsafeRawBufferPointer, wake: () -> Void) -> Bool {
      guard frame.count <= ReplyRing.largestFrame else { return false }
      publish(frame, keepingRoom: ReplyRing.markerRoom, wake: wake)
      return true
    }

    /// Publishes a small frame in the room every publish keeps free for it.
    mutating func publishMarker(_ frame: UnsafeRawBufferPointer, wake: () -> Void) {
      publish(frame, keepingRoom: 0, wake: wake)
    }

    /// Waits for the parent to make room: 20 µs at first, doubling up to 1 ms while it is busy
    /// elsewhere (rare: the parent reads the ring whenever it is awake).
    private mutating func publish(_ frame: UnsafeRawBufferPointer, keepingRoom room: Int, wake: () -> Void) {
      var pause = 20_000
      while !tryPublish(frame, keepingRoom: room) {
        wake()
        Syscall.sleep(nanoseconds: pause)
        pause = min(pause * 2, 1_000_000)
      }
    }

    private mutating func tryPublish(_ frame: UnsafeRawBufferPointer, keepingRoom room: Int) -> Bool {
      let offset = Int(tail % UInt64(ReplyRing.capacity))
      let skip = ReplyRing.capacity - offset < frame.count ? ReplyRing.capacity - offset : 0
      let free = ReplyRing.capacity - Int(tail &- ring.consumedHead)
      guard skip + frame.count + room <= free else { return false }
      if skip >= Frame.headerSize { ring.data.storeBytes(of: UInt32.max, toByteOffset: offset, as: UInt32.self) }
      pp_copy_bytes(ring.data + (skip > 0 ? 0 : offset), frame.baseAddress!, frame.count)
      tail += UInt64(skip + frame.count)
      ring.publish(tail: tail)
      return true
    }
  }
}
