import Testing

@testable import ProcessPool

/// The reply ring on its own, both ends in this process: frames come out whole and in order
/// across many wraps, a frame too big is refused, and a malformed one throws.
@Suite struct ReplyRingTests {
  /// A frame of `kind` and `id` whose payload is `size` bytes derived from `id`.
  static func frame(_ kind: Frame.Kind = .results, id: UInt64, size: Int) -> [UInt8] {
    var bytes: [UInt8] = []
    let start = Frame.begin(kind, id: id, into: &bytes)
    bytes += (0..<size).map { UInt8(truncatingIfNeeded: $0 &+ Int(id)) }
    Frame.finish(at: start, in: &bytes)
    return bytes
  }

  static func makeRing() throws -> ReplyRing {
    let (ring, fd) = try ReplyRing.create()
    Syscall.close(fd)
    return ring
  }

  @Test func framesComeOutWholeAndInOrderAcrossWraps() throws {
    let ring = try Self.makeRing()
    var writer = ReplyRing.Writer(ring)
    var reader = ReplyRing.Reader(ring)
    // Sizes that leave every kind of remainder before the end: none, less than a header, more.
    let sizes = [0, 1, 12, 13, 100, 4093, 65_536, 200_000, ReplyRing.largestFrame - Frame.headerSize]
    var published = 0
    var next: UInt64 = 1
    var expected: [UInt64] = []
    while published < 5 * ReplyRing.capacity {
      // At most two frames wait, so the ring never fills (this thread is also the reader).
      let frame = Self.frame(id: next, size: sizes[Int(next) % sizes.count])
      #expect(frame.withUnsafeBytes { writer.publish($0, wake: {}) })
      expected.append(next)
      published += frame.count
      next += 1
      if expected.count == 2 { try takeOne(&reader, &expected) }
    }
    while !expected.isEmpty { try takeOne(&reader, &expected) }
    #expect(try reader.next() == nil)
    #expect(!reader.hasFrames)
  }

  /// Reads one frame and checks it is the next expected one, byte for byte.
  private func takeOne(_ reader: inout ReplyRing.Reader, _ expected: inout [UInt64]) throws {
    guard let id = expected.first else { return }
    let found = try #require(try reader.next())
    #expect(found.header.kind == .results)
    #expect(found.header.id == id)
    let payload = Array(UnsafeRawBufferPointer(rebasing: found.bytes[found.header.payload]))
    let size = Self.frame(id: id, size: 0).count
    #expect(payload == Array(Self.frame(id: id, size: payload.count)[size...]))
    reader.release()
    expected.removeFirst()
  }

  /// With `left` bytes before the end of the ring, a frame that does not fit there starts again
  /// at the front (marked when a header fits in what is skipped); one that fits stays.
  @Test(arguments: [0, 1, 5, 12, 13, 14, 32, 33, 100])
  func aFrameThatDoesNotFitBeforeTheEndStartsAtTheFront(_ left: Int) throws {
    let ring = try Self.makeRing()
    var writer = ReplyRing.Writer(ring)
    var reader = ReplyRing.Reader(ring)
    var expected: [UInt64] = []
    var id: UInt64 = 1
    var remaining = ReplyRing.capacity - left
    while remaining > 0 {
      var size = min(remaining, ReplyRing.largestFrame)
      if (1..<Frame.headerSize).contains(remaining - size) { size -= Frame.headerSize }
      let frame = Self.frame(id: id, size: size - Frame.headerSize)
      #expect(frame.withUnsafeBytes { writer.publish($0, wake: {}) })
      expected.append(id)
      try takeOne(&reader, &expected)
      remaining -= size
      id += 1
    }
    // 33 bytes: wraps for every `left` but 33 and 100.
    let last = Self.frame(id: id, size: 20)
    #expect(last.withUnsafeBytes { writer.publish($0, wake: {}) })
    expected.append(id)
    try takeOne(&reader, &expected)
    #expect(try reader.next() == nil)
  }

  @Test func aWriterWaitsForRoomUntilTheReaderTakesFrames() async throws {
    let ring = try Self.makeRing()
    var writer = ReplyRing.Writer(ring)
    var reader = ReplyRing.Reader(ring)
    let size = ReplyRing.largestFrame - Frame.headerSize
    // Three of the largest frames fit; a fourth does not until the reader takes one.
    for id in UInt64(1)...3 {
      #expect(Self.frame(id: id, size: size).withUnsafeBytes { writer.publish($0, wake: {}) })
    }
    let (waiting, signal) = AsyncStream<Void>.makeStream()
    let publisher = Task.detached { [writer] in
      var writer = writer
      let frame = Self.frame(id: 4, size: size)
      // `wake` runs each time there is no room: the writer is waiting.
      defer { signal.finish() }
      return frame.withUnsafeBytes { writer.publish($0, wake: { signal.yield() }) }
    }
    var waited = false
    for await _ in waiting {
      waited = true
      break
    }
    #expect(waited)
    var expected: [UInt64] = [1, 2, 3, 4]
    try takeOne(&reader, &expected)
    #expect(await publisher.value)
    while !expected.isEmpty { try takeOne(&reader, &expected) }
  }

  @Test func aFrameTooBigForTheRingIsRefused() throws {
    let ring = try Self.makeRing()
    var writer = ReplyRing.Writer(ring)
    let big = Self.frame(id: 1, size: ReplyRing.largestFrame)
    #expect(!big.withUnsafeBytes { writer.publish($0, wake: {}) })
    #expect(!ReplyRing.Reader(ring).hasFrames)
  }

  @Test func aMalformedFrameThrows() throws {
    let ring = try Self.makeRing()
    var writer = ReplyRing.Writer(ring)
    var frame = Self.frame(id: 1, size: 8)
    frame[0] = 3  // a length shorter than a frame header
    #expect(frame.withUnsafeBytes { writer.publish($0, wake: {}) })
    var reader = ReplyRing.Reader(ring)
    #expect(throws: WireError.self) { try reader.next() }
  }

  /// A worker may write anything into the ring's header: a tail behind the reader, past its
  /// room, or inside a remainder the writer skipped is an error, not a trap.
  @Test(arguments: [UInt64(10), 0, UInt64(ReplyRing.capacity) * 3, UInt64(ReplyRing.capacity) - 4])
  func aCorruptTailThrows(_ corrupt: UInt64) throws {
    let (ring, fd) = try ReplyRing.create()
    defer { Syscall.close(fd) }
    // The worker's view of the header page, as a broken worker would write it.
    let header = try Syscall.mapShared(fd, size: ReplyRing.headerPage)
    defer { Syscall.unmap(header, size: ReplyRing.headerPage) }
    var writer = ReplyRing.Writer(ring)
    var reader = ReplyRing.Reader(ring)
    // Fill the ring to just short of its end, so the last position is a remainder.
    var taken: UInt64 = 0
    let frame = Self.frame(id: 1, size: 100)
    while taken + UInt64(2 * frame.count) < UInt64(ReplyRing.capacity) - 8 {
      #expect(frame.withUnsafeBytes { writer.publish($0, wake: {}) })
      taken += UInt64(frame.count)
      _ = try reader.next()
      reader.release()
    }
    header.storeBytes(of: corrupt, as: UInt64.self)
    #expect(throws: WireError.self) { try reader.next() }
  }

  @Test func aSleepingParentIsWokenOnce() throws {
    let ring = try Self.makeRing()
    #expect(!ring.parentNeedsWaking())
    ring.setParentSleeping(true)
    #expect(ring.parentNeedsWaking())
    #expect(!ring.parentNeedsWaking())
  }
}
