/// How a task runs in the worker: opened from `any ProcessTask.Type`, it decodes its own value
/// and inputs, runs, and writes one outcome per input into a `results` payload.
extension ProcessTask {
  static func decodeTask(_ bytes: UnsafeRawBufferPointer) throws -> any ProcessTask {
    try BinaryDecoder.decode(Self.self, from: bytes)
  }

  /// Runs `self` over each input block and appends `[u32 count]([u8 status][u32 length][bytes])*`
  /// to the frame that starts at `frameStart` in `payload`. One reader and one writer serve the
  /// whole chunk. An output that would take the frame past `Frame.sendLimit` becomes a
  /// `valueTooLarge` failure (refused before a big array is copied).
  func runChunk(_ inputs: InputBlocks, into payload: inout [UInt8], frameStart: Int) async {
    payload.appendLittleEndian(UInt32(inputs.count))
    let writer = ByteWriter(payload)
    writer.byteLimit = frameStart + Frame.sendLimit.load(ordering: .relaxed)
    payload = []
    defer { payload = writer.bytes }
    let decoder = ByteReader(UnsafeRawBufferPointer(start: nil, count: 0))
    var reader = PayloadReader(inputs.bytes)
    for _ in 0..<inputs.count {
      let value: Input
      do {
        value = try BinaryDecoder.decode(Input.self, from: try reader.block(), reusing: decoder)
      } catch {
        appendFailureOutcome(
          ProcessPoolError(.decodingFailed, "cannot decode the input of \(Self.self) in the worker: \(error)"),
          to: writer)
        continue
      }
      do {
        Self.append(try await run(value), to: writer, frameStart: frameStart)
      } catch {
        appendFailureOutcome(error, to: writer)
      }
    }
  }

  /// Appends a success outcome, or the encoding failure of `value`.
  private static func append(_ value: Output, to writer: ByteWriter, frameStart: Int) {
    let mark = writer.bytes.count
    writer.bytes.append(Frame.Status.success.rawValue)
    do {
      try writer.appendBlock(value)
    } catch {
      writer.bytes.removeSubrange(mark...)
      appendFailureOutcome(
        ProcessPoolError.encoding(of: "the output of \(Self.self) in the worker", error, messageStart: frameStart),
        to: writer)
    }
  }
}

/// Appends a failure outcome: the error as a `RemoteErrorRecord` block.
func appendFailureOutcome(_ error: any Error, to payload: inout [UInt8]) {
  payload.withByteWriter { appendFailureOutcome(error, to: $0) }
}

func appendFailureOutcome(_ error: any Error, to writer: ByteWriter) {
  // An error record is small and always goes out, whatever is left of the frame's budget (the
  // frame as a whole is checked when it is finished).
  let budget = writer.byteLimit
  writer.byteLimit = .max
  defer { writer.byteLimit = budget }
  writer.bytes.append(Frame.Status.failure.rawValue)
  let record = RemoteErrorRecord(error)
  do {
    try writer.appendBlock(record)
  } catch {
    let fallback = RemoteErrorRecord(ProcessPoolError(.encodingFailed, "cannot encode an error: \(error)"))
    try! writer.appendBlock(fallback)
  }
}

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
