/// A value that could not be encoded, or bytes that could not be decoded.
enum CodecError: Error, CustomStringConvertible {
  case encoding(String)
  case decoding(String)
  /// The encoding grew past what its length field or its frame can carry.
  case tooLarge(atLeast: Int, limit: Int)

  var description: String {
    switch self {
    case .encoding(let message): return "cannot encode: \(message)"
    case .decoding(let message): return "cannot decode: \(message)"
    case .tooLarge(let size, let limit):
      return "the encoding takes at least \(size) bytes, more than the limit of \(limit) bytes"
    }
  }

  static func path(_ path: [any CodingKey]) -> String {
    path.isEmpty ? "<root>" : path.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
  }
}

/// The codec's value tags. Every value starts with one, which makes the format self-describing
/// enough to skip a value (a key the decoder does not ask for) and to check types.
enum CodecTag: UInt8 {
  case null = 0
  case falseValue = 1
  case trueValue = 2
  /// Zigzag LEB128 varint.
  case signed = 3
  /// LEB128 varint.
  case unsigned = 4
  case float = 5
  case double = 6
  /// Varint byte count, UTF-8 bytes.
  case string = 7
  /// Varint count, raw bytes (`[UInt8]` fast path).
  case bytes = 8
  /// `u32` byte length of the rest, `u32` count, then (string key, value) pairs.
  case keyed = 9
  /// `u32` byte length of the rest, `u32` count, then values.
  case unkeyed = 10
  /// Varint count, 8 bytes little endian each (`[Int]` fast path).
  case ints = 11
  /// Varint count, 8 bytes little endian each (`[Double]` fast path).
  case doubles = 12
}

extension ProcessPoolError {
  /// The error for `what` ("the input of Square") that could not be encoded:
  /// ``Code/valueTooLarge`` when it outgrew its message (`base` is where that message starts in
  /// the encoder's buffer), else ``Code/encodingFailed``.
  static func encoding(of what: String, _ error: any Error, messageStart base: Int = 0) -> ProcessPoolError {
    guard case .tooLarge(let size, let limit)? = error as? CodecError else {
      return ProcessPoolError(.encodingFailed, "cannot encode \(what): \(error)")
    }
    return ProcessPoolError(
      .valueTooLarge,
      "\(what) is too large: its message takes at least \(size - base) bytes, more than the limit of "
        + "\(limit - base) bytes")
  }
}
