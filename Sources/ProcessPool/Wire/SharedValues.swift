import CProcessPoolShims
import Synchronization

/// Large values between the parent and a local worker through memory they share, instead of
/// the socket: a `run` frame whose payload is at least `threshold` bytes is copied into the
/// region toward the worker, and the socket carries only a `runShared` frame that says where
/// it is; a `results` frame too big for the reply ring goes into the region toward the parent,
/// announced in the ring by a `resultsShared` frame. One copy each way besides the encoding and
/// the decoding, no system call per value, and no 1 GiB frame limit (values up to `limit`, 8 GiB).
///
/// The regions live in the reply ring's memfd, after the ring (the worker gets them with it, no
/// descriptor passing): a header page (how many values each consumer has released), then
/// `capacity` bytes toward the worker, then `capacity` bytes toward the parent. Their size is
/// virtual: a memfd's pages take memory only once written. Each region has one producer, which
/// places values at page-aligned offsets, oldest first, starting again at 0 whenever the region
/// is empty (so the same pages serve value after value, without page faults); the consumer
/// reads each value where it was told, checks the offset and length against the region (a
/// forged one is a protocol error, never a read out of bounds), and releases values in the
/// order they were placed. Past the first `retained` bytes of a region, a value's pages are
/// given back to the system when it is released, so a value of gigabytes does not stay in
/// memory after it was read; and when a smaller value follows bigger ones into an empty
/// region, its producer gives back what they used past `kept` (or past the new value).
final class SharedValues: @unchecked Sendable {
  /// Which way a value goes; each direction has its own region and its own producer.
  enum Direction {
    /// Inputs: the parent places, the worker reads and releases.
    case toWorker
    /// Outputs: the worker places, the parent reads and releases.
    case toParent
  }

  /// Where a value lies in its region: the payload of `runShared` and `resultsShared` frames,
  /// `[u64 offset][u64 length]`.
  struct Span: Equatable {
    let offset: Int
    let length: Int
  }

  static let pageSize = 4096
  /// The header page: how many values the worker has released (at 0) and the parent (at 64).
  static let headerSize = pageSize
  /// The room of each region. Address space and memfd size only: never memory by itself.
  static let capacity = 1 << 34
  static var mappedSize: Int { headerSize + 2 * capacity }
  /// A `run` payload at least this big goes through shared memory (a smaller one costs less
  /// on the socket than a page of the region); outputs go there when the ring refuses them.
  static let threshold = 1 << 16
  /// How many bytes at the start of each region may stay in memory after their value was read
  /// (past them, pages go back as soon as their value is released), so that values of up to
  /// that size, passed again and again, reuse pages without faults.
  static let retained = 1 << 28
  /// What a region keeps once a smaller value follows bigger ones: its producer gives back the
  /// pages between this (or the new value's end) and what the bigger ones used.
  static let kept = 1 << 26
  /// The largest whole frame (length field included) exchanged with a local worker: half a
  /// region, so that with a value of that size in flight the next one still finds room (a
  /// worker takes two jobs at a time by default). Blocks of 4 GiB or more escape their `u32`
  /// length (see `BlockLength`); a frame's own length field only saturates, since such a frame
  /// never crosses the socket. Tests lower it, like `Frame.sendLimit`.
  static let limit = Atomic(capacity / 2)
  /// How many bytes of large inputs a worker may hold at once, page by page (the state keeps to
  /// it, see `WorkerSlot.hasSharedRoom`): within half a region the placer always finds room for
  /// the next value, however earlier ones wrapped around; past it a value could find none. A
  /// worker holding none takes any value up to `limit`. Tests lower it.
  static let inflightBudget = Atomic(capacity / 2)
  /// Set by tests: the next workers get no regions, as when mapping them fails (their values
  /// then go through the socket, up to `Frame.sendLimit`).
  static let unavailable = Atomic(false)

  private let base: UnsafeMutableRawPointer
  /// The producer's side of the region this process writes: under the pool's lock in the
  /// parent (toward the worker; the copy into the room it gives is made after the lock is
  /// released), on the loop's thread in a worker (toward the parent).
  private var placer = Placer()

  init(base: UnsafeMutableRawPointer) { self.base = base }

  deinit { Syscall.unmap(base, size: Self.mappedSize) }

  /// Maps the regions at `offset` in `fd` (no memory is reserved for them, and they stay out of
  /// core dumps).
  static func map(_ fd: Int32, at offset: Int) throws(Errno) -> SharedValues {
    let base = try Syscall.mapShared(fd, size: mappedSize, offset: offset, reserve: false)
    Syscall.excludeFromCoreDumps(base, size: mappedSize)
    return SharedValues(base: base)
  }

  private func region(_ direction: Direction) -> UnsafeMutableRawPointer {
    base + Self.headerSize + (direction == .toWorker ? 0 : Self.capacity)
  }

  private func releasedCounter(_ direction: Direction) -> UnsafeMutableRawPointer {
    base + (direction == .toWorker ? 0 : 64)
  }

  // MARK: Producer

  /// Copies `bytes` into the region toward `direction`; nil when the values placed and not
  /// yet released leave no room for it now.
  func place(_ bytes: UnsafeRawBufferPointer, _ direction: Direction) -> Span? {
    guard let span = reserve(bytes.count, direction) else { return nil }
    copy(bytes, to: span, direction)
    return span
  }

  /// Copies `head`, then `tail`, into the region toward `direction`, as one value; nil when
  /// there is no room for it now.
  func place(_ head: UnsafeRawBufferPointer, then tail: [UInt8], _ direction: Direction) -> Span? {
    guard !tail.isEmpty else { return place(head, direction) }
    guard let span = reserve(head.count + tail.count, direction) else { return nil }
    let start = region(direction) + span.offset
    if head.count > 0 { start.copyMemory(from: head.baseAddress!, byteCount: head.count) }
    tail.withUnsafeBytes { pp_copy_bytes(start + head.count, $0.baseAddress!, $0.count) }
    return span
  }

  /// Room for `count` bytes in the region toward `direction`, to be filled by `copy` before its
  /// place is sent; nil when the values placed and not yet released leave no room for it now.
  func reserve(_ count: Int, _ direction: Direction) -> Span? {
    let released = pp_load_acquire_u64(releasedCounter(direction))
    guard let offset = placer.reserve(count, released: released) else { return nil }
    if let trim = placer.takeTrim() { Syscall.discard(region(direction) + trim.lowerBound, size: trim.count) }
    return Span(offset: offset, length: count)
  }

  /// Fills the room `reserve` gave (any thread: the room is the caller's alone until the
  /// consumer, told of it afterwards, releases it).
  func copy(_ bytes: UnsafeRawBufferPointer, to span: Span, _ direction: Direction) {
    precondition(bytes.count == span.length, "a shared value copied into room of another size")
    if bytes.count > 0 {
      pp_copy_bytes(region(direction) + span.offset, bytes.baseAddress!, bytes.count)
    }
  }

  /// Room in the region toward the worker for the payload of the `run` frame `frame` (header
  /// included) and its `tail` (`Job.tail`); nil when it is too small to gain from it or finds
  /// no room.
  func reserveRun(_ frame: [UInt8], tail: [UInt8]) -> Span? {
    let size = frame.count - Frame.headerSize + tail.count
    guard size >= Self.threshold else { return nil }
    return reserve(size, .toWorker)
  }

  /// Copies the payload of the `run` frame `frame`, then its `tail`, into the room `reserveRun`
  /// gave it.
  func copyRun(_ frame: [UInt8], tail: [UInt8], to span: Span) {
    let head = frame.count - Frame.headerSize
    precondition(head + tail.count == span.length, "a shared value copied into room of another size")
    let start = region(.toWorker) + span.offset
    frame.withUnsafeBytes { pp_copy_bytes(start, $0.baseAddress! + Frame.headerSize, head) }
    tail.withUnsafeBytes { bytes in
      if let base = bytes.baseAddress { pp_copy_bytes(start + head, base, bytes.count) }
    }
  }

  /// A frame that points at `span`: `[u64 offset][u64 length]`.
  static func frame(_ kind: Frame.Kind, id: UInt64, _ span: Span) -> [UInt8] {
    var frame: [UInt8] = []
    frame.reserveCapacity(Frame.headerSize + 16)
    let start = Frame.begin(kind, id: id, into: &frame)
    frame.appendLittleEndian(UInt64(span.offset))
    frame.appendLittleEndian(UInt64(span.length))
    Frame.finish(at: start, in: &frame)
    return frame
  }

  // MARK: Consumer

  /// The value a `runShared` or `resultsShared` payload points at, checked to lie inside the
  /// region: a forged offset or length throws, and nothing outside the region is read.
  func value(at payload: UnsafeRawBufferPointer, _ direction: Direction) throws(WireError) -> (
    span: Span, bytes: UnsafeRawBufferPointer
  ) {
    var reader = PayloadReader(payload)
    let offset = try reader.integer(UInt64.self)
    let length = try reader.integer(UInt64.self)
    guard reader.isAtEnd else { throw WireError("trailing bytes after a shared value's place") }
    guard offset <= UInt64(Self.capacity), length <= UInt64(Self.capacity) - offset else {
      throw WireError("a shared value at \(offset) of \(length) bytes lies outside its region")
    }
    let span = Span(offset: Int(offset), length: Int(length))
    return (span, UnsafeRawBufferPointer(start: region(direction) + span.offset, count: span.length))
  }

  /// Hands the room of the oldest value not yet released back to its producer (values are
  /// released in the order they were placed); its pages past `retained` go back to the system
  /// first, while the producer cannot be writing there.
  func release(_ span: Span, _ direction: Direction) {
    let start = Self.roundUp(max(span.offset, Self.retained))
    let end = Self.roundUp(span.offset + span.length)
    if end > start { Syscall.discard(region(direction) + start, size: end - start) }
    let counter = releasedCounter(direction)
    pp_store_release_u64(counter, pp_load_acquire_u64(counter) &+ 1)
  }

  static func roundUp(_ size: Int) -> Int { (size + pageSize - 1) & ~(pageSize - 1) }
}

/// The producer's bookkeeping of one region: the values placed and not yet released, oldest
/// first. It lives in the producer's process only; the consumer shares just its count of
/// releases, so a broken consumer can make the producer wait, never write out of the region.
/// It also tracks how far pages may be in memory, to give back what bigger values left behind.
struct Placer {
  /// The end of the pages that may be in memory (at most `SharedValues.retained`).
  private var resident = 0
  /// Pages to give back before the next value is written: the region was empty, and values
  /// bigger than the one placed now left pages past it.
  private var trim: Range<Int>?
  /// Page-aligned ranges of the region in use, oldest first, from `oldest` on.
  private var live: [Range<Int>] = []
  private var oldest = 0
  /// How many values were dropped from `live` as released.
  private var dropped: UInt64 = 0

  /// The offset for `size` more bytes, or nil when there is no room for them before the oldest
  /// value still in use. `released` is the consumer's count of values it is done with.
  mutating func reserve(_ size: Int, released: UInt64) -> Int? {
    while dropped < released && oldest < live.count {
      oldest += 1
      dropped += 1
    }
    if oldest >= 64 && oldest * 2 >= live.count {
      live.removeFirst(oldest)
      oldest = 0
    }
    let size = max(SharedValues.roundUp(size), SharedValues.pageSize)
    guard size <= SharedValues.capacity else { return nil }
    let start: Int
    if oldest == live.count {
      // Empty: from the start again, where the pages are already in memory. Nothing is read
      // from the region now, so what bigger values left past this one can go back.
      live.removeAll(keepingCapacity: true)
      oldest = 0
      start = 0
      let keep = max(SharedValues.kept, size)
      if resident > keep {
        trim = keep..<resident
        resident = keep
      }
    } else {
      let first = live[oldest].lowerBound
      let end = live[live.count - 1].upperBound
      if live[live.count - 1].lowerBound >= first {
        // In use: [first, end). Room after it, else before it.
        if end + size <= SharedValues.capacity {
          start = end
        } else if size <= first {
          start = 0
        } else {
          return nil
        }
      } else {
        // Wrapped: in use from `first` to the end, and from 0 to `end`.
        guard end + size <= first else { return nil }
        start = end
      }
    }
    live.append(start..<start + size)
    resident = max(resident, min(start + size, SharedValues.retained))
    return start
  }

  /// The pages to give back before writing the value just placed, once.
  mutating func takeTrim() -> Range<Int>? {
    defer { trim = nil }
    return trim
  }
}
