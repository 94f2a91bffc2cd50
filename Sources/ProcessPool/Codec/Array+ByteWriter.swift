extension Array where Element == UInt8 {
  /// Appends `[u32 length][encoding of value]`, patching the length after encoding in place.
  mutating func appendEncodedBlock<T: Encodable>(_ value: T) throws {
    try withByteWriter { try $0.appendBlock(value) }
  }

  /// Lends the array to a `ByteWriter` (moved, not copied) for several blocks in a row.
  mutating func withByteWriter<R>(_ body: (ByteWriter) throws -> R) rethrows -> R {
    let writer = ByteWriter(self)
    self = []
    defer { self = writer.bytes }
    return try body(writer)
  }
}
