/// How a task runs in the worker: opened from `any ProcessTask.Type`, it decodes its own value
/// and inputs, runs, and writes one outcome per input into a `results` payload.
extension ProcessTask {
  static func decodeTask(_ bytes: UnsafeRawBufferPointer) throws -> any ProcessTask {
    try BinaryDecoder.decode(Self.self, from: bytes)
  }

  /// Runs `self` over each input block and appends `[u32 count]([u8 status][u32 length][bytes])*`
  /// to the frame that starts at `frameStart` in `payload`. One reader and one writer serve the
  /// whole chunk. An output that would take the frame past `limit` (the worker's
  /// `messageLimit`) becomes a `valueTooLarge` failure (refused before a big array is copied).
  func runChunk(_ inputs: InputBlocks, into payload: inout [UInt8], frameStart: Int, limit: Int) async {
    payload.appendLittleEndian(UInt32(inputs.count))
    let writer = ByteWriter(payload)
    writer.byteLimit = frameStart + limit
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
