#if canImport(Glibc)
  import Glibc
#endif

/// Decodes `Decodable` values from the package's binary format (see BinaryEncoder.swift).
/// Every length is checked against the bytes that are left before anything is allocated, so
/// malformed input throws `CodecError.decoding` and never crashes.
@usableFromInline
struct BinaryDecoder {
  static func decode<T: Decodable>(_ type: T.Type, from bytes: UnsafeRawBufferPointer) throws -> T {
    try decode(type, from: bytes, reusing: ByteReader(bytes))
  }

  /// `decode` with a reader kept across the blocks of one payload (one allocation, not one per
  /// item of a chunk). Inlinable so that an `Int` in its usual form (a map's most common item)
  /// takes a direct path where the type is known; anything else takes the general one.
  @inlinable
  static func decode<T: Decodable>(
    _ type: T.Type, from bytes: UnsafeRawBufferPointer, reusing reader: ByteReader
  ) throws -> T {
    if T.self == Int.self, let value = plainInt(bytes) { return unsafeBitCast(value, to: T.self) }
    return try decodeValue(type, from: bytes, reusing: reader)
  }

  /// An `Int` encoded as the encoder writes it (the signed tag, then a zigzag varint of up to 9
  /// bytes that ends the block), or nil for anything else, which the general path decodes or
  /// rejects with its usual error.
  @usableFromInline
  static func plainInt(_ bytes: UnsafeRawBufferPointer) -> Int? {
    guard bytes.count >= 2 && bytes.count <= 10 && bytes[0] == CodecTag.signed.rawValue else { return nil }
    var raw: UInt64 = 0
    var shift: UInt64 = 0
    for index in 1..<bytes.count {
      let byte = bytes[index]
      raw |= UInt64(byte & 0x7f) << shift
      if byte & 0x80 == 0 {
        guard index == bytes.count - 1 else { return nil }
        return Int(Int64(bitPattern: (raw >> 1) ^ (0 &- (raw & 1))))
      }
      shift += 7
    }
    return nil
  }

  @usableFromInline
  static func decodeValue<T: Decodable>(
    _ type: T.Type, from bytes: UnsafeRawBufferPointer, reusing reader: ByteReader
  ) throws -> T {
    reader.bytes = bytes
    var offset = 0
    let value = try reader.decodeValue(T.self, at: &offset, path: [])
    guard offset == bytes.count else {
      throw CodecError.decoding("\(bytes.count - offset) trailing bytes after \(T.self)")
    }
    return value
  }

  static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
    try bytes.withUnsafeBytes { try decode(type, from: $0) }
  }
}

/// A bounds-checked view of the input shared by every container of one decoding.
///
/// One decoding at a time on one thread: no runtime exclusivity checks (see `ByteWriter`).
@usableFromInline
final class ByteReader {
  /// The bytes of the value being decoded (moved on to the next block when reused).
  @exclusivity(unchecked) var bytes: UnsafeRawBufferPointer

  @usableFromInline
  init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

  func fail(_ message: String, _ path: [any CodingKey]) -> CodecError {
    .decoding("\(message) at \(CodecError.path(path))")
  }

  // MARK: Primitives

  func tag(at offset: inout Int, _ path: [any CodingKey]) throws -> CodecTag {
    guard offset < bytes.count else { throw fail("unexpected end of data", path) }
    guard let tag = CodecTag(rawValue: bytes[offset]) else { throw fail("unknown tag \(bytes[offset])", path) }
    offset += 1
    return tag
  }

  func peekTag(at offset: Int) -> CodecTag? {
    offset < bytes.count ? CodecTag(rawValue: bytes[offset]) : nil
  }

  func varint(at offset: inout Int, _ path: [any CodingKey]) throws -> UInt64 {
    var result: UInt64 = 0
    var shift: UInt64 = 0
    while true {
      guard offset < bytes.count else { throw fail("unexpected end of data in an integer", path) }
      let byte = bytes[offset]
      offset += 1
      guard shift < 64 else { throw fail("integer too long", path) }
      result |= UInt64(byte & 0x7f) << shift
      if byte & 0x80 == 0 { return result }
      shift += 7
    }
  }

  func fixed<T: FixedWidthInteger>(_: T.Type, at offset: inout Int, _ path: [any CodingKey]) throws -> T {
    let size = MemoryLayout<T>.size
    guard bytes.count - offset >= size else { throw fail("unexpected end of data", path) }
    let value = T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
    offset += size
    return value
  }

  /// A length that must fit in what is left (times `unit` bytes each).
  func length(at offset: inout Int, unit: Int, _ path: [any CodingKey]) throws -> Int {
    let raw = try varint(at: &offset, path)
    guard raw <= UInt64(bytes.count - offset) / UInt64(unit) else {
      throw fail("length \(raw) exceeds the \(bytes.count - offset) bytes left", path)
    }
    return Int(raw)
  }

  func integer<T: FixedWidthInteger>(_: T.Type, at offset: inout Int, _ path: [any CodingKey]) throws -> T {
    switch try tag(at: &offset, path) {
    case .signed:
      let raw = try varint(at: &offset, path)
      let value = Int64(bitPattern: (raw >> 1) ^ (0 &- (raw & 1)))
      guard let exact = T(exactly: value) else { throw fail("\(value) does not fit in \(T.self)", path) }
      return exact
    case .unsigned:
      let value = try varint(at: &offset, path)
      guard let exact = T(exactly: value) else { throw fail("\(value) does not fit in \(T.self)", path) }
      return exact
    case let other:
      throw fail("expected \(T.self), found \(other)", path)
    }
  }

  func string(at offset: inout Int, _ path: [any CodingKey]) throws -> String {
    let found = try tag(at: &offset, path)
    guard found == .string else { throw fail("expected String, found \(found)", path) }
    return try rawString(at: &offset, path)
  }

  /// A varint-length UTF-8 string with no tag (also the form of keys).
  func rawString(at offset: inout Int, _ path: [any CodingKey]) throws -> String {
    let count = try length(at: &offset, unit: 1, path)
    let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count])
    offset += count
    guard let string = String(validating: slice.bindMemory(to: UInt8.self), as: UTF8.self) else {
      throw fail("invalid UTF-8", path)
    }
    return string
  }

  /// Whether the raw key at `offset` equals `key`, without making a String.
  func keyMatches(_ key: String, at offset: Int) -> Bool {
    var cursor = offset
    guard let count = try? length(at: &cursor, unit: 1, []) else { return false }
    var key = key
    return key.withUTF8 { utf8 in
      utf8.count == count && (count == 0 || memcmp(utf8.baseAddress!, bytes.baseAddress! + cursor, count) == 0)
    }
  }

  func skipKey(at offset: inout Int) throws {
    let count = try length(at: &offset, unit: 1, [])
    offset += count
  }

  /// Moves past one value of any kind.
  func skip(at offset: inout Int, _ path: [any CodingKey]) throws {
    switch try tag(at: &offset, path) {
    case .null, .falseValue, .trueValue: break
    case .signed, .unsigned: _ = try varint(at: &offset, path)
    case .float: offset += try checked(4, at: offset, path)
    case .double: offset += try checked(8, at: offset, path)
    case .string, .bytes: offset += try length(at: &offset, unit: 1, path)
    case .ints, .doubles: offset += try length(at: &offset, unit: 8, path) * 8
    case .keyed, .unkeyed:
      let byteLength = Int(try fixed(UInt32.self, at: &offset, path))
      offset += try checked(byteLength, at: offset, path)
    }
  }

  private func checked(_ count: Int, at offset: Int, _ path: [any CodingKey]) throws -> Int {
    guard bytes.count - offset >= count else { throw fail("unexpected end of data", path) }
    return count
  }

  func float64(at offset: inout Int, _ path: [any CodingKey]) throws -> Double {
    switch try tag(at: &offset, path) {
    case .double: return Double(bitPattern: try fixed(UInt64.self, at: &offset, path))
    case .float: return Double(Float(bitPattern: try fixed(UInt32.self, at: &offset, path)))
    case let other: throw fail("expected Double, found \(other)", path)
    }
  }

  func float32(at offset: inout Int, _ path: [any CodingKey]) throws -> Float {
    switch try tag(at: &offset, path) {
    case .float: return Float(bitPattern: try fixed(UInt32.self, at: &offset, path))
    case let other: throw fail("expected Float, found \(other)", path)
    }
  }

  func bool(at offset: inout Int, _ path: [any CodingKey]) throws -> Bool {
    switch try tag(at: &offset, path) {
    case .trueValue: return true
    case .falseValue: return false
    case let other: throw fail("expected Bool, found \(other)", path)
    }
  }

  // MARK: Values

  /// Decodes one value at `offset` and moves past it.
  func decodeValue<T: Decodable>(_ type: T.Type, at offset: inout Int, path: [any CodingKey]) throws -> T {
    if let kind = PrimitiveKind(T.self) { return try decodePrimitive(kind, as: T.self, at: &offset, path) }
    let start = offset
    let value = try T(from: ValueDecoder(reader: self, offset: start, codingPath: path))
    try skip(at: &offset, path)
    return value
  }

  /// Returns `T` itself, not `T?`: an optional of an unspecialised `T` costs a runtime metadata
  /// lookup per value.
  private func decodePrimitive<T: Decodable>(
    _ kind: PrimitiveKind, as _: T.Type, at offset: inout Int, _ path: [any CodingKey]
  ) throws -> T {
    switch kind {
    case .int: return unsafeBitCast(try integer(Int.self, at: &offset, path), to: T.self)
    case .string: return unsafeBitCast(try string(at: &offset, path), to: T.self)
    case .double: return unsafeBitCast(try float64(at: &offset, path), to: T.self)
    case .bool: return unsafeBitCast(try bool(at: &offset, path), to: T.self)
    case .bytes:
      let found = try tag(at: &offset, path)
      guard found == .bytes else { throw fail("expected [UInt8], found \(found)", path) }
      let count = try length(at: &offset, unit: 1, path)
      let value = [UInt8](copying: UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count]))
      offset += count
      return unsafeBitCast(value, to: T.self)
    case .ints, .doubles:
      let expected: CodecTag = kind == .ints ? .ints : .doubles
      let found = try tag(at: &offset, path)
      guard found == expected else { throw fail("expected \(T.self), found \(found)", path) }
      let count = try length(at: &offset, unit: 8, path)
      let base = offset
      offset += count * 8
      if expected == .ints {
        let value = [Int](unsafeUninitializedCapacity: count) { buffer, initialized in
          for index in 0..<count {
            buffer[index] = Int(
              Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: base + index * 8, as: Int64.self)))
          }
          initialized = count
        }
        return unsafeBitCast(value, to: T.self)
      }
      let value = [Double](unsafeUninitializedCapacity: count) { buffer, initialized in
        for index in 0..<count {
          buffer[index] = Double(
            bitPattern: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: base + index * 8, as: UInt64.self)))
        }
        initialized = count
      }
      return unsafeBitCast(value, to: T.self)
    case .float: return unsafeBitCast(try float32(at: &offset, path), to: T.self)
    case .int64: return unsafeBitCast(try integer(Int64.self, at: &offset, path), to: T.self)
    case .int32: return unsafeBitCast(try integer(Int32.self, at: &offset, path), to: T.self)
    case .int16: return unsafeBitCast(try integer(Int16.self, at: &offset, path), to: T.self)
    case .int8: return unsafeBitCast(try integer(Int8.self, at: &offset, path), to: T.self)
    case .uint: return unsafeBitCast(try integer(UInt.self, at: &offset, path), to: T.self)
    case .uint64: return unsafeBitCast(try integer(UInt64.self, at: &offset, path), to: T.self)
    case .uint32: return unsafeBitCast(try integer(UInt32.self, at: &offset, path), to: T.self)
    case .uint16: return unsafeBitCast(try integer(UInt16.self, at: &offset, path), to: T.self)
    case .uint8: return unsafeBitCast(try integer(UInt8.self, at: &offset, path), to: T.self)
    }
  }

  /// Opens the container at `offset`: checks its tag and bounds; returns (count, first entry,
  /// end).
  func container(_ expected: CodecTag, at offset: Int, _ path: [any CodingKey]) throws -> (
    count: Int, first: Int, end: Int
  ) {
    var cursor = offset
    let found = try tag(at: &cursor, path)
    guard found == expected else { throw fail("expected a \(expected) container, found \(found)", path) }
    let byteLength = Int(try fixed(UInt32.self, at: &cursor, path))
    guard byteLength >= 4, bytes.count - cursor >= byteLength else {
      throw fail("container length out of bounds", path)
    }
    let end = cursor + byteLength
    let count = Int(try fixed(UInt32.self, at: &cursor, path))
    guard count <= byteLength else { throw fail("container count out of bounds", path) }
    return (count, cursor, end)
  }
}
