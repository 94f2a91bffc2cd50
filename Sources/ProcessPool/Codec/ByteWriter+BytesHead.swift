extension ByteWriter {
  /// Appends the block of a `[UInt8]` of `count` bytes up to its bytes, exactly as `appendBlock`
  /// would write it: the length field (the `BlockLength` escape and a `u64` from 4 GiB on), the
  /// tag and the count. The caller sends the bytes right after (`Job.tail`), so a large input
  /// is not copied into the frame first. Throws `CodecError.tooLarge` where `appendBlock` would,
  /// leaving nothing of the block. Tests lower `escapeAt` as they do `BlockLength.patch`'s.
  func appendBytesBlockHead(count: Int, escapeAt: Int = Int(BlockLength.escape)) throws {
    let start = bytes.count
    bytes.appendLittleEndian(UInt32(0))
    let length: Int
    let escaped: Bool
    do {
      try checkLimit(adding: count)
      tag(.bytes)
      varint(UInt64(count))
      length = bytes.count - start - 4 + count
      escaped = length >= escapeAt
      try checkLimit(adding: count + (escaped ? 8 : 0))
    } catch {
      bytes.removeSubrange(start...)
      throw error
    }
    if escaped {
      bytes.insert(contentsOf: repeatElement(0, count: 8), at: start + 4)
      bytes.withUnsafeMutableBytes {
        $0.storeBytes(of: BlockLength.escape.littleEndian, toByteOffset: start, as: UInt32.self)
        $0.storeBytes(of: UInt64(length).littleEndian, toByteOffset: start + 4, as: UInt64.self)
      }
    } else {
      bytes.withUnsafeMutableBytes {
        $0.storeBytes(of: UInt32(length).littleEndian, toByteOffset: start, as: UInt32.self)
      }
    }
  }
}

extension ByteWriter {
  /// When `output` is a `[UInt8]` of at least `apartFrom` bytes that fits the writer's limit,
  /// appends its success outcome up to its bytes (the status and `appendBytesBlockHead`) and
  /// returns true: the caller sends the bytes right after. Otherwise appends nothing.
  func appendBytesOutcomeHead<T>(_ output: T, apartFrom: Int) -> Bool {
    guard T.self == [UInt8].self else { return false }
    let count = unsafeBitCast(output, to: [UInt8].self).count
    guard count >= apartFrom else { return false }
    bytes.append(Frame.Status.success.rawValue)
    do {
      try appendBytesBlockHead(count: count)
      return true
    } catch {
      bytes.removeLast()
      return false
    }
  }
}
