import CProcessPoolShims
import Synchronization

/// The framing on a worker's socket: `[u32 length][u8 kind][u64 request id][payload]`, little
/// endian, where `length` counts everything after itself. One socket per worker, so there is no
/// multiplexing beyond the request id.
enum Frame {
  /// Bumped whenever the frames or the codec change shape; the handshake refuses a mismatch.
  static let protocolVersion: UInt32 = 4
  static let headerSize = 13
  /// The largest frame either side accepts; a bigger length is a protocol violation.
  static let maximumSize = 1 << 30
  /// The largest whole frame (length field included) this process builds around a value: an
  /// input, a chunk of inputs or a task's outputs that would make a bigger one fail with
  /// `valueTooLarge` instead. `maximumSize` except in tests, which lower it (in the parent and,
  /// through a task, in a worker) to try the limit without gigabytes.
  static let sendLimit = Atomic(maximumSize)

  enum Kind: UInt8 {
    /// Worker to parent, first frame: protocol version and pid.
    case hello = 1
    /// Parent to worker: run a task over one or more inputs (a chunk).
    case run = 2
    /// Worker to parent: one outcome per input of a `run`.
    case results = 3
    /// Parent to worker: finish what was sent, then exit.
    case stop = 4
    // 5 was `awaitingBootstrap` (up to protocol version 2): no worker waits for a bootstrap call.
    /// Parent to worker: run the pool's initializer task once, before any work.
    case initialize = 6
    /// Worker to parent, on the socket: replies are waiting in the reply ring (sent only when
    /// the parent sleeps).
    case wake = 7
    /// Worker to parent, in the reply ring: the next `results` frame comes on the socket (it is
    /// too big for the ring).
    case resultsOnSocket = 8
    /// Parent to worker, on the socket: a `run` frame whose payload is in shared memory (see
    /// `SharedValues`; up to protocol version 3, every payload came on the socket).
    case runShared = 9
    /// Worker to parent, in the reply ring: a `results` frame whose payload is in shared memory.
    case resultsShared = 10
  }

  /// A complete frame found in a read buffer: its payload is `bytes[payload]`.
  struct Header {
    let kind: Kind
    let id: UInt64
    let payload: Range<Int>
  }

  /// Outcome tags inside a `results` frame.
  enum Status: UInt8 {
    case success = 0
    case failure = 1
  }

  /// The header at `offset` in `bytes`, which holds at least `headerSize` bytes from there:
  /// the frame's kind, id and whole size. Throws on a length out of bounds or an unknown kind.
  static func header(in bytes: UnsafeRawBufferPointer, at offset: Int) throws(WireError) -> (
    kind: Kind, id: UInt64, size: Int
  ) {
    let length = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
    guard length >= headerSize - 4, length <= maximumSize else {
      throw WireError("frame length \(length) out of bounds")
    }
    guard let kind = Kind(rawValue: bytes[offset + 4]) else {
      throw WireError("unknown frame kind \(bytes[offset + 4])")
    }
    let id = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 5, as: UInt64.self))
    return (kind, id, length + 4)
  }

  /// A frame with no payload and id 0 (a signal such as `wake`).
  static func bare(_ kind: Kind) -> [UInt8] {
    var frame = emptyHeader
    fillHeader(kind, id: 0, in: &frame)
    return frame
  }

  /// Room for a header at the start of a frame built before its id is known (a job's).
  static var emptyHeader: [UInt8] { [UInt8](repeating: 0, count: headerSize) }

  /// Fills in the header of a frame that started with `emptyHeader` and goes on with `trailing`
  /// bytes kept apart from it (`Job.tail`).
  static func fillHeader(_ kind: Kind, id: UInt64, in frame: inout [UInt8], trailing: Int = 0) {
    let length = UInt32(clamping: frame.count + trailing - 4)
    frame.withUnsafeMutableBytes { bytes in
      bytes.storeBytes(of: length.littleEndian, toByteOffset: 0, as: UInt32.self)
      bytes[4] = kind.rawValue
      bytes.storeBytes(of: id.littleEndian, toByteOffset: 5, as: UInt64.self)
    }
  }

  /// Appends a frame header; the payload follows and `finish` patches the length.
  @inline(__always)
  static func begin(_ kind: Kind, id: UInt64, into buffer: inout [UInt8]) -> Int {
    let start = buffer.count
    buffer.append(contentsOf: [0, 0, 0, 0, kind.rawValue])
    buffer.appendLittleEndian(id)
    return start
  }

  /// Patches the length (of the frame from `start` and the `trailing` bytes sent after it, as a
  /// `Job.tail`); a frame too long for it (only ever in shared memory, whose
  /// `runShared` or `resultsShared` frame says how long it is) gets `UInt32.max`, never a trap.
  @inline(__always)
  static func finish(at start: Int, in buffer: inout [UInt8], trailing: Int = 0) {
    let length = UInt32(clamping: buffer.count + trailing - start - 4)
    buffer.withUnsafeMutableBytes { bytes in
      bytes.storeBytes(of: length.littleEndian, toByteOffset: start, as: UInt32.self)
    }
  }
}

extension Array where Element == UInt8 {
  /// Byte by byte: for 2 to 8 bytes, unrolled appends cost less than `append(contentsOf:)`
  /// of a buffer (a call and a `memmove` for every length field and integer written).
  @inline(__always)
  mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
    for shift in stride(from: 0, to: MemoryLayout<T>.size * 8, by: 8) {
      append(UInt8(truncatingIfNeeded: value >> shift))
    }
  }

  /// A `u32` length followed by the bytes.
  @inline(__always)
  mutating func appendBlock(_ bytes: [UInt8]) {
    appendLittleEndian(UInt32(bytes.count))
    append(contentsOf: bytes)
  }
}

/// A bounds-checked cursor over a frame's payload: every read checks what is left, so a malformed
/// frame throws instead of reading past the end.
@usableFromInline
struct PayloadReader {
  let bytes: UnsafeRawBufferPointer
  var offset = 0

  init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

  var isAtEnd: Bool { offset == bytes.count }

  mutating func integer<T: FixedWidthInteger>(_: T.Type) throws(WireError) -> T {
    let size = MemoryLayout<T>.size
    guard bytes.count - offset >= size else { throw WireError("truncated frame") }
    let value = bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
    offset += size
    return T(littleEndian: value)
  }

  /// A `u32`-length-prefixed block (see `BlockLength`), as a view into the frame.
  @usableFromInline
  mutating func block() throws(WireError) -> UnsafeRawBufferPointer {
    let count = try blockLength(try integer(UInt32.self))
    guard bytes.count - offset >= count else { throw WireError("truncated block") }
    let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count])
    offset += count
    return slice
  }

  mutating func string() throws(WireError) -> String {
    String(decoding: try block(), as: UTF8.self)
  }
}

/// A malformed frame.
@usableFromInline
struct WireError: Error, CustomStringConvertible {
  @usableFromInline let description: String
  init(_ description: String) { self.description = description }
}

extension Array where Element == UInt8 {
  /// A copy of `bytes` by one `pp_copy_bytes` (the generic sequence initializer goes byte by
  /// byte).
  init(copying bytes: UnsafeRawBufferPointer) {
    self.init(unsafeUninitializedCapacity: bytes.count) { buffer, initialized in
      if let base = bytes.baseAddress, bytes.count > 0 {
        if bytes.count >= Self.hugePagesFrom {
          Syscall.adviseHugePages(UnsafeMutableRawPointer(buffer.baseAddress!), size: buffer.count)
        }
        pp_copy_bytes(buffer.baseAddress!, base, bytes.count)
      }
      initialized = bytes.count
    }
  }
}
