import CProcessPoolShims
import Synchronization
import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// Issue 18, item 2: values past `SharedValues.threshold` go to and from a local worker through
/// shared memory, not its socket. Most tests lower the socket's limit (`Frame.sendLimit`) in
/// both processes to 4 KiB, so a value that arrives whole cannot have come through the socket.
extension WorkerProcessTests {
  @Suite struct SharedValueTests {
    static let socketLimit = 4096

    @Test func largeValuesCrossWholeBothWays() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        try await withSocketLimit(Self.socketLimit, pool) { () async throws in
          for size in [SharedValues.threshold - 100, SharedValues.threshold, 1 << 20, (4 << 20) + 5] {
            let input = MakeBytes.expected(size)
            #expect(try await pool.submit(Echo(), input).value == input)
            #expect(try await pool.submit(MakeBytes(), size).value == input)
          }
          // Pipelined: several values live in each region at once, released in order.
          let sizes = (0..<12).map { 70_000 + $0 * 40_000 }
          var outputs: [[UInt8]] = []
          for try await output in try pool.map(Echo(), sizes.map { MakeBytes.expected($0) }, chunksize: 1) {
            outputs.append(output)
          }
          #expect(outputs == sizes.map { MakeBytes.expected($0) })
          // A chunk of several inputs shares one region's place.
          let chunk = try await SharedValueTests.collect(pool.map(MakeBytes(), sizes, chunksize: 5))
          #expect(chunk == sizes.map { MakeBytes.expected($0) })
          #expect(pool.statistics.workersCrashed == 0)
        }
      }
    }

    /// A large input is copied into shared memory after the pool's lock is released, while its
    /// frame waits in the worker's channel: frames queued meanwhile, small or large, still reach
    /// the worker in order (one out of order would be a result for a job it was not running).
    @Test func largeAndSmallInputsPipelinedToOneWorkerKeepTheirOrder() async throws {
      var configuration = ProcessPoolExecutor.Configuration.workers(1)
      configuration.jobsPerWorker = 4
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let sizes = (0..<40).map { $0 % 3 == 0 ? 10 + $0 : 70_000 + $0 * 30_000 }
        let inputs = sizes.map { MakeBytes.expected($0) }
        let futures = try inputs.map { try pool.submit(Echo(), $0) }
        for (future, input) in zip(futures, inputs) { #expect(try await future.value == input) }
        let mapped = try await SharedValueTests.collect(pool.map(Echo(), inputs, chunksize: 1))
        #expect(mapped == inputs)
        #expect(pool.statistics.workersCrashed == 0)
      }
    }

    /// Above the 1 GiB frame limit of the socket. About 3 GiB of memory in each process, briefly
    /// (the value, its encoding and its copy in shared memory); a value of several GiB takes the
    /// same path (checked by hand with 3 GiB: see the CHANGELOG).
    @Test func aValueAboveTheSocketLimitWorksLocally() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let size = Frame.maximumSize + 1
        #expect(try await pool.submit(CountBytes(), [UInt8](repeating: 3, count: size)).value == [size, 3])
        let output = try await pool.submit(ZeroBytes(), size).value
        #expect(output.count == size && output.last == 0)
        #expect(pool.statistics.workersCrashed == 0)
      }
    }

    /// 3 GiB each way: about 12 GiB of memory at the peak over both processes, so only with
    /// PROCESSPOOL_LARGE_TESTS set (run by hand; the value above the socket's limit runs always).
    @Test(.enabled(if: getenv("PROCESSPOOL_LARGE_TESTS") != nil))
    func valuesOfSeveralGiBWorkLocally() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let size = 3 << 30
        #expect(try await pool.submit(CountBytes(), [UInt8](repeating: 5, count: size)).value == [size, 5])
        let output = try await pool.submit(ZeroBytes(), size).value
        #expect(output.count == size && output.last == 0)
        #expect(pool.statistics.workersCrashed == 0)
      }
    }

    /// Past 4 GiB, where a block's `u32` length escapes to a `u64` (see `BlockLength`): an
    /// output of 4 GiB and a page, made in the worker, checked by its size and a few bytes on
    /// both sides of the 4 GiB mark. About 8 GiB of memory at the peak over both processes (the
    /// output and its encoding in the worker, then its copy in shared memory and the decoded
    /// array in the parent), so only with PROCESSPOOL_LARGE_TESTS set (run by hand).
    @Test(.enabled(if: getenv("PROCESSPOOL_LARGE_TESTS") != nil))
    func aValueAbove4GiBWorksLocally() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let size = (4 << 30) + 4096
        let output = try await pool.submit(MarkedBytes(), size).value
        #expect(output.count == size)
        #expect(MarkedBytes.marks(size).allSatisfy { output[$0] == MarkedBytes.mark($0) })
        #expect(output[1 << 20] == 0 && output[size - 2] == 0)
        #expect(pool.statistics.workersCrashed == 0)
      }
    }

    @Test func aWorkerThatDiesWithALargeValueInFlightLeavesNothingBehind() async throws {
      var configuration = ProcessPoolExecutor.Configuration.workers(1)
      configuration.jobsPerWorker = 2
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let input = MakeBytes.expected(4 << 20)
        // Dies after reading its large input, with another large input queued behind it.
        let dying = try pool.submit(DieAfterReading(), input)
        let queued = try pool.submit(Echo(), input)
        await #expect { try await dying.value } throws: { ($0 as? ProcessPoolError)?.code == .workerCrashed }
        #expect(try await queued.value == input)
        // A large reply published before its worker died reaches its future.
        let outcomes = await ValueSizeTests.outcomes(try pool.map(BigThenDie(), [0, 1], chunksize: 1))
        #expect((try? outcomes[0].get())?.count == 2 << 20)
        #expect(ValueSizeTests.code(outcomes[1]) == .workerCrashed)
        #expect(try await pool.submit(Echo(), input).value == input)
      }
    }

    @Test func aValueThatFailsToEncodeHalfwayFailsAloneEitherWay() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        #expect { try pool.submit(TakeHalfEncodable(), HalfEncodable()) } throws: {
          ($0 as? ProcessPoolError)?.code == .encodingFailed
        }
        await #expect { try await pool.submit(ReturnHalfEncodable(), 0).value } throws: {
          ($0 as? ProcessPoolError)?.code == .encodingFailed
        }
        let input = MakeBytes.expected(1 << 20)
        #expect(try await pool.submit(Echo(), input).value == input)
        #expect(pool.statistics.workersCrashed == 0)
      }
    }

    /// Without the regions (as when the memfd or its mapping cannot be had), values go on the
    /// socket, and one too large for it fails with `valueTooLarge` on its future.
    @Test func withoutSharedMemoryValuesGoOnTheSocketUpToItsLimit() async throws {
      SharedValues.unavailable.store(true, ordering: .relaxed)
      defer { SharedValues.unavailable.store(false, ordering: .relaxed) }
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let input = MakeBytes.expected(1 << 20)
        #expect(try await pool.submit(Echo(), input).value == input)
        try await withSocketLimit(Self.socketLimit, pool) { () async throws in
          await #expect { try await pool.submit(Echo(), MakeBytes.expected(10_000)).value } throws: {
            ($0 as? ProcessPoolError)?.code == .valueTooLarge
          }
          await #expect { try await pool.submit(MakeBytes(), 10_000).value } throws: {
            ($0 as? ProcessPoolError)?.code == .valueTooLarge
          }
          #expect(try await pool.submit(Echo(), [1, 2]).value == [1, 2])
        }
        #expect(pool.statistics.workersCrashed == 0)
      }
    }

    /// A launched worker (maybe on another host) shares no memory: the socket and its limit,
    /// with `valueTooLarge` at the call site.
    @Test func aLaunchedWorkerKeepsTheSocketLimit() async throws {
      var configuration = ProcessPoolExecutor.Configuration()
      configuration.launchers = [.command([ProcessPoolWorker.executablePath], workers: 1)]
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let input = MakeBytes.expected(1 << 20)
        #expect(try await pool.submit(Echo(), input).value == input)
        try await withSocketLimit(Self.socketLimit, pool) { () async throws in
          #expect { try pool.submit(Echo(), MakeBytes.expected(10_000)) } throws: {
            ($0 as? ProcessPoolError)?.code == .valueTooLarge
          }
          await #expect { try await pool.submit(MakeBytes(), 10_000).value } throws: {
            ($0 as? ProcessPoolError)?.code == .valueTooLarge
          }
        }
      }
    }

    /// A worker that says its result lies outside the region toward the parent is a protocol
    /// violation: its job fails with that code, nothing is read out of bounds, and the pool
    /// replaces the worker.
    @Test(arguments: [UInt64(SharedValues.capacity), UInt64.max])
    func aForgedPlaceFromTheWorkerIsAProtocolViolation(_ offset: UInt64) async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(ForgeSharedPlace(), offset).value } throws: {
          ($0 as? ProcessPoolError)?.code == .protocolViolation
        }
        let input = MakeBytes.expected(1 << 20)
        #expect(try await pool.submit(Echo(), input).value == input)
      }
    }

    /// A worker whose result in shared memory has an escaped block length past its payload:
    /// the future fails with a protocol violation (nothing read out of bounds, no trap), and
    /// the pool goes on with a new worker.
    @Test func aForgedEscapedLengthFromTheWorkerIsAProtocolViolation() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(ForgeEscapedLength(), 0).value } throws: {
          ($0 as? ProcessPoolError)?.code == .protocolViolation
        }
        let input = MakeBytes.expected(1 << 20)
        #expect(try await pool.submit(Echo(), input).value == input)
      }
    }

    /// Lowers the socket limit in this process and in the pool's worker (one worker) for `body`.
    func withSocketLimit(_ limit: Int, _ pool: ProcessPoolExecutor, _ body: () async throws -> Void) async throws {
      let saved = Frame.sendLimit.exchange(limit, ordering: .relaxed)
      defer { Frame.sendLimit.store(saved, ordering: .relaxed) }
      let workerSaved = try await pool.submit(SetSocketLimit(), limit).value
      try await body()
      _ = try await pool.submit(SetSocketLimit(), workerSaved).value
    }

    static func collect<S: AsyncSequence>(_ sequence: S) async throws -> [S.Element] {
      var elements: [S.Element] = []
      for try await element in sequence { elements.append(element) }
      return elements
    }
  }
}

/// The regions on their own, both ends in this process: places are reused, wrap, and run out;
/// a forged place throws instead of reading outside the region.
@Suite struct SharedValuePlacementTests {
  static func makeValues() throws -> SharedValues {
    let (ring, fd) = try ReplyRing.create()
    Syscall.close(fd)
    // The regions stay mapped (and the memfd alive) after the ring is gone.
    return try #require(ring.values)
  }

  @Test func anEmptyRegionStartsAgainAtZero() {
    var placer = Placer()
    #expect(placer.reserve(100, released: 0) == 0)
    #expect(placer.reserve(5000, released: 0) == 4096)
    #expect(placer.reserve(1, released: 0) == 3 * 4096)
    #expect(placer.reserve(10, released: 3) == 0)
  }

  @Test func aSmallerValueAfterBiggerOnesGivesTheirPagesBack() {
    var placer = Placer()
    let mib = 1 << 20
    #expect(placer.reserve(200 * mib + 1, released: 0) == 0)
    #expect(placer.takeTrim() == nil)
    // Not while the big one is in use; then down to `kept`, once.
    #expect(placer.reserve(mib, released: 0) == 200 * mib + 4096)
    #expect(placer.takeTrim() == nil)
    #expect(placer.reserve(mib, released: 2) == 0)
    #expect(placer.takeTrim() == SharedValues.kept..<(201 * mib + 4096))
    #expect(placer.takeTrim() == nil)
    // A value past `kept` keeps its own pages; past `retained`, the consumer gives them back.
    #expect(placer.reserve(100 * mib, released: 3) == 0)
    #expect(placer.reserve(2 * mib, released: 4) == 0)
    #expect(placer.takeTrim() == SharedValues.kept..<100 * mib)
    #expect(placer.reserve(1 << 30, released: 5) == 0)
    #expect(placer.reserve(mib, released: 6) == 0)
    #expect(placer.takeTrim() == SharedValues.kept..<SharedValues.retained)
  }

  @Test func placesWrapAroundAndRunOut() {
    var placer = Placer()
    let quarter = SharedValues.capacity / 4
    #expect(placer.reserve(quarter, released: 0) == 0)
    #expect(placer.reserve(quarter, released: 0) == quarter)
    #expect(placer.reserve(quarter, released: 0) == 2 * quarter)
    // Not before the end: the oldest is still in use.
    #expect(placer.reserve(2 * quarter, released: 0) == nil)
    // The oldest released: room at the front, then after it, but not over the next one.
    #expect(placer.reserve(quarter, released: 1) == 3 * quarter)
    #expect(placer.reserve(quarter, released: 1) == 0)
    #expect(placer.reserve(1, released: 1) == nil)
    #expect(placer.reserve(SharedValues.capacity + 1, released: 5) == nil)
  }

  /// Without a bound on what is in flight, values that wrap around can leave no room: with two
  /// values of five sixteenths of the region in flight and the first released, a value of six
  /// fits after them, but the next one of six fits neither after it nor before the oldest.
  @Test func valuesThatWrapCanLeaveNoRoomPastHalfARegion() {
    var placer = Placer()
    let sixteenth = SharedValues.capacity / 16
    #expect(placer.reserve(5 * sixteenth, released: 0) == 0)
    #expect(placer.reserve(5 * sixteenth, released: 0) == 5 * sixteenth)
    #expect(placer.reserve(6 * sixteenth, released: 1) == 10 * sixteenth)
    #expect(placer.reserve(6 * sixteenth, released: 1) == nil)
  }

  /// Within `inflightBudget` (half a region), the placer always finds room, whatever the sizes
  /// and however they wrap: values placed and released in order, at random, never in flight
  /// together past the budget (one alone may take all of it).
  @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8])
  func withinTheBudgetAValueAlwaysFindsRoom(seed: UInt64) {
    var random = SplitMix(seed: seed)
    var placer = Placer()
    let budget = SharedValues.inflightBudget.load(ordering: .relaxed)
    var inFlight: [Int] = []
    var released: UInt64 = 0
    for _ in 0..<20_000 {
      let size = Int(random.next() % UInt64(random.next() % 4 == 0 ? budget : budget / 8)) + 1
      let rounded = SharedValues.roundUp(size)
      // Release the oldest (in order) until it fits the budget, and now and then one more.
      while !inFlight.isEmpty && (inFlight.reduce(0, +) + rounded > budget || random.next() % 3 == 0) {
        inFlight.removeFirst()
        released += 1
      }
      #expect(placer.reserve(size, released: released) != nil, "no room for \(size) with \(inFlight) in flight")
      inFlight.append(rounded)
    }
  }

  @Test func aValueComesBackWhereItWasPlaced() throws {
    let values = try Self.makeValues()
    let bytes = MakeBytes.expected(100_000)
    let span = try #require(bytes.withUnsafeBytes { values.place($0, .toParent) })
    let frame = SharedValues.frame(.resultsShared, id: 7, span)
    let (read, view) = try frame.withUnsafeBytes {
      try values.value(at: UnsafeRawBufferPointer(rebasing: $0[13...]), .toParent)
    }
    #expect(read == span)
    #expect(Array(view) == bytes)
    values.release(span, .toParent)
    #expect(bytes.withUnsafeBytes { values.place($0, .toParent) } == span)
  }

  static let capacity = UInt64(SharedValues.capacity)
  static let forged: [[UInt64]] = [
    [capacity + 1, 0], [0, capacity + 1], [capacity - 10, 11], [.max, 2], [2, .max], [.max, .max],
  ]

  @Test(arguments: forged)
  func aForgedPlaceThrows(_ place: [UInt64]) throws {
    let (offset, length) = (place[0], place[1])
    let values = try Self.makeValues()
    var payload: [UInt8] = []
    payload.appendLittleEndian(offset)
    payload.appendLittleEndian(length)
    #expect(throws: WireError.self) { try payload.withUnsafeBytes { try values.value(at: $0, .toParent) } }
    payload.append(0)
    #expect(throws: WireError.self) { try payload.withUnsafeBytes { try values.value(at: $0, .toParent) } }
    #expect(throws: WireError.self) {
      try payload.withUnsafeBytes { try values.value(at: UnsafeRawBufferPointer(rebasing: $0[..<15]), .toParent) }
    }
  }
}

/// Blocks of 4 GiB or more escape their `u32` length; tried here with the escape lowered.
@Suite struct BlockLengthTests {
  @Test func aLongBlockEscapesItsLengthAndReadsBack() throws {
    for escapeAt in [0, 5, 1000] {
      var bytes: [UInt8] = [7]
      bytes.appendLittleEndian(UInt32(0))
      bytes.append(contentsOf: MakeBytes.expected(100))
      BlockLength.patch(&bytes, at: 1, escapeAt: escapeAt)
      #expect(bytes.count == 105 + (escapeAt <= 100 ? 8 : 0))
      bytes.append(42)
      let read = bytes.withUnsafeBytes { raw -> (block: [UInt8], next: UInt8, atEnd: Bool)? in
        var reader = PayloadReader(UnsafeRawBufferPointer(rebasing: raw[1...]))
        guard let block = try? reader.block(), let next = try? reader.integer(UInt8.self) else { return nil }
        return (Array(block), next, reader.isAtEnd)
      }
      #expect(read?.block == MakeBytes.expected(100) && read?.next == 42 && read?.atEnd == true)
    }
  }

  /// A forged or cut escaped length (from a broken worker) throws a `WireError`, which the pool
  /// reports as a protocol violation; it never traps or reads past the payload.
  @Test(arguments: [UInt64(5), 100, UInt64(Int.max), UInt64(Int.max) + 1, .max])
  func aForgedEscapedLengthThrows(_ length: UInt64) {
    var payload: [UInt8] = []
    payload.appendLittleEndian(BlockLength.escape)
    payload.appendLittleEndian(length)
    payload.append(contentsOf: [1, 2, 3, 4])
    #expect(throws: WireError.self) {
      try payload.withUnsafeBytes { raw in
        var reader = PayloadReader(raw)
        _ = try reader.block()
      }
    }
    #expect(throws: WireError.self) {
      try payload.withUnsafeBytes { raw in
        var reader = PayloadReader(UnsafeRawBufferPointer(rebasing: raw[..<9]))
        _ = try reader.block()
      }
    }
  }

  /// A large `[UInt8]` input sent apart from its frame (`Job.tail`): the head the frame gets,
  /// followed by the bytes, is exactly the block `appendBlock` writes, escaped length included.
  @Test func aBytesBlockHeadAndItsBytesAreTheEncodedBlock() throws {
    for (size, escapeAt) in [(0, Int(BlockLength.escape)), (70_000, Int(BlockLength.escape)), (300, 5), (300, 1000)] {
      let value = MakeBytes.expected(size)
      var whole: [UInt8] = [7]
      whole.withByteWriter { writer in try! writer.appendBlock(value) }
      // The same block with the escape lowered (its `u32` field rewritten or escaped).
      BlockLength.patch(&whole, at: 1, escapeAt: escapeAt)
      var head: [UInt8] = [7]
      try head.withByteWriter { try $0.appendBytesBlockHead(count: size, escapeAt: escapeAt) }
      #expect(head + value == whole)
    }
    // Past the writer's limit it throws as `appendBlock` does, and leaves nothing behind.
    var bytes: [UInt8] = [7]
    #expect(throws: CodecError.self) {
      try bytes.withByteWriter { writer in
        writer.byteLimit = 1000
        try writer.appendBytesBlockHead(count: 996)
      }
    }
    #expect(bytes == [7])
  }

  /// Through the encoder: a value's block is escaped only from 4 GiB on (the common block
  /// keeps its 4-byte length).
  @Test func theEncoderEscapesOnlyFrom4GiB() throws {
    var bytes: [UInt8] = []
    try bytes.appendEncodedBlock(MakeBytes.expected(70_000))
    let short = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
    #expect(short == UInt32(bytes.count - 4))
    #expect(BlockLength.extra(forLength: Int(UInt32.max) - 1) == 0)
    #expect(BlockLength.extra(forLength: Int(UInt32.max)) == 8)
  }
}

/// Buffers of megabytes for values (which ask for huge pages) hold what was written, and grow
/// geometrically, as `append` does.
@Suite struct BulkBufferTests {
  @Test func largeByteArraysEncodeAndDecodeWhole() throws {
    for size in [[UInt8].hugePagesFrom - 1, [UInt8].hugePagesFrom, 9 << 20] {
      let value = MakeBytes.expected(size)
      var bytes: [UInt8] = [1, 2, 3]
      try bytes.appendEncodedBlock(value)
      #expect(bytes[..<3] == [1, 2, 3])
      let decoded = try bytes.withUnsafeBytes { raw in
        var reader = PayloadReader(UnsafeRawBufferPointer(rebasing: raw[3...]))
        return try BinaryDecoder.decode([UInt8].self, from: try reader.block())
      }
      #expect(decoded == value)
      #expect(value.withUnsafeBytes { [UInt8](copying: $0) } == value)
    }
  }

  /// `pp_copy_bytes` goes in pieces where the destination lies just past the source modulo a
  /// page: at every such distance, and others, each byte lands where it should and nothing
  /// around the destination is written.
  @Test func copiesAtEveryDistanceKeepEveryByte() {
    let source = MakeBytes.expected(8192 + 70_000)
    let pattern = MakeBytes.expected(4 * 4096 + 70_000).map { $0 ^ 0x5a }
    var destination = pattern
    source.withUnsafeBytes { from in
      destination.withUnsafeMutableBytes { to in
        // Page offsets of the destination against the source's.
        let page = (Int(bitPattern: to.baseAddress!) - Int(bitPattern: from.baseAddress!)) & 4095
        for distance in Array(0..<130) + Array(4096 - 70..<4096) {
          let start = 4096 + ((distance - page + 7) & 4095)
          for count in [0, 1, 1024, 1025, 2048 + 17, 70_000] {
            pattern.withUnsafeBytes { to.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: to.count) }
            pp_copy_bytes(to.baseAddress! + start, from.baseAddress! + 7, count)
            let copied = memcmp(to.baseAddress! + start, from.baseAddress! + 7, count) == 0
            let before = memcmp(to.baseAddress!, pattern, start) == 0
            let after = pattern.withUnsafeBytes {
              memcmp(to.baseAddress! + start + count, $0.baseAddress! + start + count, to.count - start - count) == 0
            }
            #expect(copied && before && after, "distance \(distance), \(count) bytes")
          }
        }
      }
    }
  }

  /// `appendBulk` appends exactly what `append(contentsOf:)` would, at distances it copies in
  /// pieces and at others.
  @Test func appendBulkAppendsAsAppendDoes() {
    let value = MakeBytes.expected(5000)
    var pieces = 0
    for distance in [0, 1, 8, 33, 63, 64, 100, 4095] {
      var bytes: [UInt8] = []
      bytes.reserveCapacity(4096 + value.count)
      let base = bytes.withUnsafeBufferPointer { Int(bitPattern: $0.baseAddress!) }
      let source = value.withUnsafeBufferPointer { Int(bitPattern: $0.baseAddress!) }
      let prefix = (distance - (base - source)) & 4095
      bytes.append(contentsOf: repeatElement(3, count: prefix))
      let split = value.withUnsafeBytes {
        pp_copy_splits(UnsafeRawPointer(bitPattern: base + prefix), $0.baseAddress!, 5000)
      }
      pieces += Int(split)
      bytes.appendBulk(value)
      #expect(bytes.count == prefix + value.count)
      #expect(bytes[..<prefix].allSatisfy { $0 == 3 } && Array(bytes[prefix...]) == value, "distance \(distance)")
    }
    #expect(pieces == 4)
  }

  @Test func bulkRoomGrowsGeometrically() {
    var bytes: [UInt8] = [7]
    var reallocations = 0
    for _ in 0..<16 {
      let capacity = bytes.capacity
      bytes.reserveForBulk(1 << 20)
      #expect(bytes.capacity >= bytes.count + (1 << 20))
      if bytes.capacity != capacity { reallocations += 1 }
      bytes.append(contentsOf: repeatElement(UInt8(9), count: 1 << 20))
    }
    #expect(reallocations <= 6)
    #expect(bytes.first == 7 && bytes.count == 1 + 16 << 20 && bytes.last == 9)
  }
}

/// `size` zero bytes but at `marks(size)`, where byte `i` is `mark(i)`: a value of gigabytes
/// made and checked without per-byte work.
struct MarkedBytes: ProcessTask {
  func run(_ size: Int) async throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: size)
    for index in Self.marks(size) { bytes[index] = Self.mark(index) }
    return bytes
  }

  static func marks(_ size: Int) -> [Int] {
    [0, 4097, (4 << 30) - 1, 4 << 30, (4 << 30) + 1, size - 1].filter { $0 < size }
  }

  static func mark(_ index: Int) -> UInt8 { UInt8(truncatingIfNeeded: index % 251 + 1) }
}

/// Publishes a `resultsShared` frame whose place starts at `offset` (8 bytes long) into its
/// worker's reply ring, found in /proc/self/maps, wakes the parent, then waits to be killed.
struct ForgeSharedPlace: ProcessTask {
  func run(_ offset: UInt64) async throws -> Int {
    let ringSize = ReplyRing.headerPage + ReplyRing.capacity
    for line in (LeakCheck.readFile("/proc/self/maps") ?? "").split(separator: "\n")
    where line.contains("memfd:processpool-ring") {
      let fields = line.split(separator: " ")
      let bounds = fields[0].split(separator: "-").compactMap { UInt(String($0), radix: 16) }
      guard bounds.count == 2, Int(bounds[1] - bounds[0]) == ringSize, UInt(String(fields[2]), radix: 16) == 0,
        let base = UnsafeMutableRawPointer(bitPattern: bounds[0])
      else { continue }
      var frame: [UInt8] = []
      let start = Frame.begin(.resultsShared, id: 1, into: &frame)
      frame.appendLittleEndian(offset)
      frame.appendLittleEndian(UInt64(8))
      Frame.finish(at: start, in: &frame)
      publishForged(frame, ring: base)
      usleep(600_000_000)
    }
    return 0
  }
}

/// Puts `frame` in this worker's reply ring at `ring` (as its writer does, without checking for
/// room: the ring is empty in these tests) and wakes the parent.
func publishForged(_ frame: [UInt8], ring: UnsafeMutableRawPointer) {
  let tail = ring.load(as: UInt64.self)
  let at = ReplyRing.headerPage + Int(tail % UInt64(ReplyRing.capacity))
  frame.withUnsafeBytes { (ring + at).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
  pp_store_release_u64(ring, tail + UInt64(frame.count))
  let wake = Frame.bare(.wake)
  _ = wake.withUnsafeBytes { write(3, $0.baseAddress, $0.count) }
}

/// Writes a `results` payload whose one block claims, by an escaped length, far more bytes than
/// follow into the region toward the parent, announces it in the reply ring with a
/// `resultsShared` frame (request 1), wakes the parent and exits (a reply in the ring outlives
/// its worker).
struct ForgeEscapedLength: ProcessTask {
  func run(_: Int) async throws -> Int {
    let ringSize = ReplyRing.headerPage + ReplyRing.capacity
    var ring: UnsafeMutableRawPointer?
    var region: UnsafeMutableRawPointer?
    for line in (LeakCheck.readFile("/proc/self/maps") ?? "").split(separator: "\n")
    where line.contains("memfd:processpool-ring") {
      let fields = line.split(separator: " ")
      let bounds = fields[0].split(separator: "-").compactMap { UInt(String($0), radix: 16) }
      guard bounds.count == 2, let base = UnsafeMutableRawPointer(bitPattern: bounds[0]) else { continue }
      let size = Int(bounds[1] - bounds[0])
      let offset = UInt(String(fields[2]), radix: 16)
      if size == ringSize && offset == 0 { ring = base }
      if size == SharedValues.mappedSize && offset == UInt(ringSize) {
        region = base + SharedValues.headerSize + SharedValues.capacity
      }
    }
    guard let ring, let region else { return -1 }
    var payload: [UInt8] = []
    payload.appendLittleEndian(UInt32(1))
    payload.append(Frame.Status.success.rawValue)
    payload.appendLittleEndian(BlockLength.escape)
    payload.appendLittleEndian(UInt64(1) << 40)
    payload.append(contentsOf: [UInt8](repeating: 0, count: 8))
    payload.withUnsafeBytes { region.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    let frame = SharedValues.frame(.resultsShared, id: 1, SharedValues.Span(offset: 0, length: payload.count))
    publishForged(frame, ring: ring)
    _exit(0)
  }
}

/// Lowers this worker's socket limit; returns the one it replaced.
struct SetSocketLimit: ProcessTask {
  func run(_ limit: Int) async throws -> Int { Frame.sendLimit.exchange(limit, ordering: .relaxed) }
}

/// Its input's size and last byte.
struct CountBytes: ProcessTask {
  func run(_ bytes: [UInt8]) async throws -> [Int] { [bytes.count, Int(bytes.last ?? 0)] }
}

/// Exits once it has read its input.
struct DieAfterReading: ProcessTask {
  func run(_ bytes: [UInt8]) async throws -> Int { exit(Int32(bytes.count % 7 + 20)) }
}

/// 2 MiB for 0; exits for anything else.
struct BigThenDie: ProcessTask {
  func run(_ x: Int) async throws -> [UInt8] {
    if x != 0 { exit(98) }
    return [UInt8](repeating: 1, count: 2 << 20)
  }
}

/// Encodes 1 MiB of bytes, then throws.
struct HalfEncodable: Codable, Sendable {
  init() {}
  init(from decoder: any Decoder) throws { self.init() }
  func encode(to encoder: any Encoder) throws {
    var container = encoder.unkeyedContainer()
    try container.encode([UInt8](repeating: 9, count: 1 << 20))
    throw EncodingError.invalidValue(0, .init(codingPath: [], debugDescription: "stops halfway"))
  }
}

struct TakeHalfEncodable: ProcessTask {
  func run(_: HalfEncodable) async throws -> Int { 0 }
}

struct ReturnHalfEncodable: ProcessTask {
  func run(_: Int) async throws -> HalfEncodable { HalfEncodable() }
}

/// A small seeded generator (SplitMix64), so a failing sequence can be replayed.
struct SplitMix: RandomNumberGenerator {
  private var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
