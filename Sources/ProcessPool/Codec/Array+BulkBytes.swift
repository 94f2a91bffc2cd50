import CProcessPoolShims

/// Fresh buffers for large values. A buffer of megabytes that the kernel fills 4 KiB page by
/// page costs more in faults and zeroing than the copy into it (an echo of 16 MiB ran at a
/// fifth of the speed per byte of one of 1 MiB): from `hugePagesFrom` bytes on, a buffer made
/// for a value asks for huge pages before anything is written to it.
extension Array where Element == UInt8 {
  /// The size from which a fresh buffer asks for huge pages (below it, two huge pages at most
  /// would fit inside, and malloc serves such sizes from memory already in use).
  static var hugePagesFrom: Int { 4 << 20 }

  /// Makes room for `more` bytes after the last, growing as `append` would (geometrically); a
  /// fresh buffer of `hugePagesFrom` bytes or more asks for huge pages past the bytes it already
  /// holds (those were just copied in).
  mutating func reserveForBulk(_ more: Int) {
    let needed = count + more
    guard needed > capacity else { return }
    reserveCapacity(Swift.max(needed, 2 * capacity))
    let room = capacity - count
    guard capacity >= Self.hugePagesFrom else { return }
    withUnsafeMutableBufferPointer { buffer in
      guard let base = buffer.baseAddress else { return }
      Syscall.adviseHugePages(UnsafeMutableRawPointer(base + buffer.count), size: room)
    }
  }

  /// Appends `value` (room for it already reserved) as `append(contentsOf:)` does, except where
  /// that one `memcpy` would be one of the slow ones `pp_copy_bytes` avoids: then the room is
  /// zeroed first and filled by `pp_copy_bytes`.
  mutating func appendBulk(_ value: [UInt8]) {
    let start = count
    let slow = value.withUnsafeBytes { source in
      withUnsafeBufferPointer { buffer in
        guard let from = source.baseAddress, let base = buffer.baseAddress else { return false }
        return pp_copy_splits(base + start, from, source.count) != 0
      }
    }
    guard slow, capacity - start >= value.count else { return append(contentsOf: value) }
    append(contentsOf: repeatElement(0, count: value.count))
    withUnsafeMutableBytes { buffer in
      value.withUnsafeBytes { pp_copy_bytes(buffer.baseAddress! + start, $0.baseAddress!, $0.count) }
    }
  }
}
