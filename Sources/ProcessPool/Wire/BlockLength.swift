/// The length field of a block, `[u32 length][bytes]`, the unit of inputs and outcomes in `run`
/// and `results` payloads. A block of 4 GiB or more (possible only through shared memory, see
/// `SharedValues`) has `escape` there, followed by a `u64` length: the common block costs no
/// byte more, and a value of several GiB still fits.
enum BlockLength {
  /// In the `u32` field: the length is the `u64` that follows.
  static let escape = UInt32.max

  /// Writes the length of the block whose `u32` field is at `start` in `bytes` (zero for now)
  /// and whose bytes run to the end: in the field, or, from `escapeAt` bytes on, as `escape` and
  /// a `u64` put after it (moving the block by 8 bytes, once per value of gigabytes). Tests
  /// lower `escapeAt` to try the escape without gigabytes.
  static func patch(_ bytes: inout [UInt8], at start: Int, escapeAt: Int = Int(escape)) {
    let length = bytes.count - start - 4
    guard length >= escapeAt else {
      bytes.withUnsafeMutableBytes {
        $0.storeBytes(of: UInt32(length).littleEndian, toByteOffset: start, as: UInt32.self)
      }
      return
    }
    bytes.insert(contentsOf: repeatElement(0, count: 8), at: start + 4)
    bytes.withUnsafeMutableBytes {
      $0.storeBytes(of: escape.littleEndian, toByteOffset: start, as: UInt32.self)
      $0.storeBytes(of: UInt64(length).littleEndian, toByteOffset: start + 4, as: UInt64.self)
    }
  }

  /// The bytes `patch` adds to a block of `length` bytes besides its `u32` field.
  static func extra(forLength length: Int) -> Int { length >= Int(escape) ? 8 : 0 }
}

extension PayloadReader {
  /// A block's length after its `u32` field was read as `short`: the `u64` after an escape,
  /// checked against the bytes left (a forged one throws, it never traps).
  mutating func blockLength(_ short: UInt32) throws(WireError) -> Int {
    guard short == BlockLength.escape else { return Int(short) }
    let long = try integer(UInt64.self)
    guard long <= UInt64(bytes.count - offset) else { throw WireError("truncated block of \(long) bytes") }
    return Int(long)
  }
}
