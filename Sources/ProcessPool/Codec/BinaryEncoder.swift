// The package's own compact binary Codable format (no Foundation, no JSON).
//
// Every value is a tag byte (`CodecTag`) and a body: integers as LEB128 varints (zigzag for
// signed), floats as little-endian IEEE bits, strings and byte arrays as a varint length and
// raw bytes, `[Int]`/`[Double]` as a count and 8 bytes each, keyed and unkeyed containers as a
// `u32` byte length (so a decoder can skip them in O(1)), a `u32` count and their entries.
// Keys travel as strings, so a decoder may read them in any order; the common in-order read is
// the fast path. Both ends are the same binary, so there is no schema evolution to handle.

/// Encodes `Encodable` values into the package's binary format.
struct BinaryEncoder {
  /// The encoding of `value`.
  static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
    var bytes: [UInt8] = []
    try bytes.withByteWriter { writer in
      try writer.encodeValue(value, path: [])
      try writer.closeAll()
    }
    return bytes
  }
}

/// The shared output buffer and the stack of open containers. Containers write in order; a
/// container used after a sibling or its parent wrote past it throws instead of corrupting.
///
/// One encoding at a time on one thread: its properties skip the runtime's exclusivity checks,
/// which cost more than the appends they guard (several per encoded integer).
@usableFromInline
final class ByteWriter {
  @exclusivity(unchecked) var bytes: [UInt8]
  /// Start offsets of open containers (their byte length is patched when they close).
  @exclusivity(unchecked) private var open: [(start: Int, token: Int)] = []
  @exclusivity(unchecked) private var nextToken = 0
  /// The most `bytes` may hold (a frame's budget, see `Frame.sendLimit`); past it encoding
  /// throws `CodecError.tooLarge`. Checked where a length is patched and before bulk copies, so
  /// an oversized array is refused before it is copied.
  @exclusivity(unchecked) var byteLimit = Int.max
  /// Where the value of a `superEncoder` entry goes, while its encoder has written nothing
  /// there: an encoder left unused still owes its entry a value (see `settleSuperValue`).
  @exclusivity(unchecked) private var superValueAt: Int?

  init(_ bytes: [UInt8]) { self.bytes = bytes }

  // MARK: Primitives

  @inline(__always) func tag(_ tag: CodecTag) { bytes.append(tag.rawValue) }

  @inline(__always) func varint(_ value: UInt64) {
    var value = value
    while value >= 0x80 {
      bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
      value >>= 7
    }
    bytes.append(UInt8(value))
  }

  @inline(__always) func signed(_ value: Int64) {
    tag(.signed)
    varint(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
  }

  @inline(__always) func unsigned(_ value: UInt64) {
    tag(.unsigned)
    varint(value)
  }

  func string(_ value: String) {
    tag(.string)
    var value = value
    value.withUTF8 { utf8 in
      varint(UInt64(utf8.count))
      bytes.append(contentsOf: utf8)
    }
  }

  func bool(_ value: Bool) { tag(value ? .trueValue : .falseValue) }

  func double(_ value: Double) {
    tag(.double)
    bytes.appendLittleEndian(value.bitPattern)
  }

  func float(_ value: Float) {
    tag(.float)
    bytes.appendLittleEndian(value.bitPattern)
  }

  /// A key inside a keyed container: a bare varint-length string (no tag).
  func key(_ key: String) {
    var key = key
    key.withUTF8 { utf8 in
      varint(UInt64(utf8.count))
      bytes.append(contentsOf: utf8)
    }
  }

  // MARK: Values

  /// Writes one value: fast paths for the common types, otherwise through its `encode(to:)`.
  func encodeValue<T: Encodable>(_ value: T, path: [any CodingKey]) throws {
    if try encodePrimitive(value) { return }
    let depth = open.count
    let start = bytes.count
    let encoder = ValueEncoder(writer: self, codingPath: path)
    try value.encode(to: encoder)
    try close(above: depth)
    // A value that asked for no container encodes as an empty keyed container.
    if bytes.count == start { emptyKeyed() }
  }

  /// Metatype checks, not dynamic casts: this runs for every value, including every field of
  /// every struct that is not a primitive.
  private func encodePrimitive<T: Encodable>(_ value: T) throws -> Bool {
    guard let kind = PrimitiveKind(T.self) else { return false }
    switch kind {
    case .int: signed(Int64(unsafeBitCast(value, to: Int.self)))
    case .string:
      let value = unsafeBitCast(value, to: String.self)
      try checkLimit(adding: value.utf8.count)
      string(value)
    case .double: double(unsafeBitCast(value, to: Double.self))
    case .bool: bool(unsafeBitCast(value, to: Bool.self))
    case .bytes:
      let value = unsafeBitCast(value, to: [UInt8].self)
      try checkLimit(adding: value.count)
      bytes.reserveForBulk(value.count + 11)
      tag(.bytes)
      varint(UInt64(value.count))
      bytes.appendBulk(value)
    case .ints:
      let value = unsafeBitCast(value, to: [Int].self)
      try checkLimit(adding: value.count * 8)
      tag(.ints)
      varint(UInt64(value.count))
      bytes.reserveCapacity(bytes.count + value.count * 8)
      for element in value { bytes.appendLittleEndian(Int64(element)) }
    case .doubles:
      let value = unsafeBitCast(value, to: [Double].self)
      try checkLimit(adding: value.count * 8)
      tag(.doubles)
      varint(UInt64(value.count))
      bytes.reserveCapacity(bytes.count + value.count * 8)
      for element in value { bytes.appendLittleEndian(element.bitPattern) }
    case .float: float(unsafeBitCast(value, to: Float.self))
    case .int64: signed(unsafeBitCast(value, to: Int64.self))
    case .int32: signed(Int64(unsafeBitCast(value, to: Int32.self)))
    case .int16: signed(Int64(unsafeBitCast(value, to: Int16.self)))
    case .int8: signed(Int64(unsafeBitCast(value, to: Int8.self)))
    case .uint: unsigned(UInt64(unsafeBitCast(value, to: UInt.self)))
    case .uint64: unsigned(unsafeBitCast(value, to: UInt64.self))
    case .uint32: unsigned(UInt64(unsafeBitCast(value, to: UInt32.self)))
    case .uint16: unsigned(UInt64(unsafeBitCast(value, to: UInt16.self)))
    case .uint8: unsigned(UInt64(unsafeBitCast(value, to: UInt8.self)))
    }
    return true
  }

  func emptyKeyed() {
    tag(.keyed)
    bytes.appendLittleEndian(UInt32(4))
    bytes.appendLittleEndian(UInt32(0))
  }

  // MARK: Containers

  /// Opens a container: tag, byte length (patched on close), count. Returns its token.
  func openContainer(_ tag: CodecTag) -> (token: Int, countOffset: Int) {
    self.tag(tag)
    let start = bytes.count
    bytes.appendLittleEndian(UInt32(0))
    bytes.appendLittleEndian(UInt32(0))
    nextToken += 1
    open.append((start, nextToken))
    return (nextToken, start + 4)
  }

  /// Makes the container `token` the innermost open one (closing those opened after it), or
  /// throws if it was already closed (used out of order).
  func activate(_ token: Int, path: [any CodingKey]) throws {
    settleSuperValue()
    guard let index = open.lastIndex(where: { $0.token == token }) else {
      throw CodecError.encoding("a container at \(CodecError.path(path)) was used after it was finished")
    }
    try close(above: index + 1)
  }

  func incrementCount(at offset: Int) {
    bytes.withUnsafeMutableBytes { raw in
      let count = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
      // Wrapping: 2^32 entries take more than 2^32 bytes, which `close` refuses.
      raw.storeBytes(of: (count &+ 1).littleEndian, toByteOffset: offset, as: UInt32.self)
    }
  }

  /// A `superEncoder` entry was begun: its value starts here, whatever its encoder writes.
  func expectSuperValue() { superValueAt = bytes.count }

  /// Runs before anything else is written into an open container or one is closed: a
  /// `superEncoder` entry whose encoder wrote nothing gets an empty keyed container, the
  /// encoding of a value that asked for no container, so the entry still has a value.
  @inline(__always) private func settleSuperValue() {
    guard let start = superValueAt else { return }
    superValueAt = nil
    if bytes.count == start { emptyKeyed() }
  }

  func close(above depth: Int) throws {
    settleSuperValue()
    while open.count > depth {
      let (start, _) = open.removeLast()
      let length = try checkedLength(from: start)
      bytes.withUnsafeMutableBytes { $0.storeBytes(of: length.littleEndian, toByteOffset: start, as: UInt32.self) }
    }
  }

  func closeAll() throws { try close(above: 0) }

  /// The `u32` length of what follows the length field at `start`; throws when it does not fit
  /// in 32 bits or the bytes are past `byteLimit` (never traps).
  private func checkedLength(from start: Int) throws -> UInt32 {
    try checkLimit(adding: 0)
    guard let length = UInt32(exactly: bytes.count - start - 4) else {
      throw CodecError.tooLarge(atLeast: bytes.count - start - 4, limit: Int(UInt32.max))
    }
    return length
  }

  /// Throws when `count` more bytes would pass `byteLimit`.
  @inline(__always)
  func checkLimit(adding count: Int) throws {
    if count > byteLimit - bytes.count {
      throw CodecError.tooLarge(atLeast: bytes.count + count, limit: byteLimit)
    }
  }

  /// Appends `[u32 length][encoding of value]` (a length of 4 GiB or more as `BlockLength`
  /// escapes it). When encoding throws, nothing of the value is left and the writer can go on
  /// with the next one (the items of a chunk share one writer). Inlinable so that an `Int` (a
  /// map's most common item) takes a direct path where the type is known.
  @inlinable
  func appendBlock<T: Encodable>(_ value: T) throws {
    if T.self == Int.self { return try appendIntBlock(unsafeBitCast(value, to: Int.self)) }
    try appendValueBlock(value)
  }

  /// `appendBlock` of an `Int`: the same bytes as the general path, without its generic steps.
  @usableFromInline
  func appendIntBlock(_ value: Int) throws {
    let start = bytes.count
    bytes.appendLittleEndian(UInt32(0))
    signed(Int64(value))
    do {
      try checkLimit(adding: 0)
    } catch {
      bytes.removeSubrange(start...)
      throw error
    }
    bytes.withUnsafeMutableBytes {
      $0.storeBytes(of: UInt32(bytes.count - start - 4).littleEndian, toByteOffset: start, as: UInt32.self)
    }
  }

  @usableFromInline
  func appendValueBlock<T: Encodable>(_ value: T) throws {
    let start = bytes.count
    bytes.appendLittleEndian(UInt32(0))
    do {
      try encodeValue(value, path: [])
      try closeAll()
      try checkLimit(adding: BlockLength.extra(forLength: bytes.count - start - 4))
    } catch {
      open.removeAll()
      superValueAt = nil
      bytes.removeSubrange(start...)
      throw error
    }
    BlockLength.patch(&bytes, at: start)
  }
}

/// The `Encoder` handed to a value's `encode(to:)`. A value that asks for its keyed container
/// twice (a class and its superclass sharing one encoder) gets the same one.
final class ValueEncoder: Encoder {
  let writer: ByteWriter
  let codingPath: [any CodingKey]
  var userInfo: [CodingUserInfoKey: Any] { [:] }
  private var keyed: (token: Int, countOffset: Int)?

  init(writer: ByteWriter, codingPath: [any CodingKey]) {
    self.writer = writer
    self.codingPath = codingPath
  }

  func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
    let opened = keyed ?? writer.openContainer(.keyed)
    keyed = opened
    return KeyedEncodingContainer(
      KeyedWriter<Key>(writer: writer, codingPath: codingPath, token: opened.token, countOffset: opened.countOffset))
  }

  func unkeyedContainer() -> any UnkeyedEncodingContainer {
    let opened = writer.openContainer(.unkeyed)
    return UnkeyedWriter(writer: writer, codingPath: codingPath, token: opened.token, countOffset: opened.countOffset)
  }

  func singleValueContainer() -> any SingleValueEncodingContainer {
    SingleValueWriter(writer: writer, codingPath: codingPath)
  }
}
