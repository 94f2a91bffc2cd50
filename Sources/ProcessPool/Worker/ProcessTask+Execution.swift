/// How a task runs in the worker: opened from `any ProcessTask.Type`, it decodes its own value
/// and inputs, runs, and writes one outcome per input into a `results` payload.
extension ProcessTask {
  static func decodeTask(_ bytes: UnsafeRawBufferPointer) throws -> any ProcessTask {
    try BinaryDecoder.decode(Self.self, from: bytes)
  }

  /// Runs `self` over each input block and appends a `results` payload (`ResultsPayload.swift`)
  /// to the frame that starts at `frameStart` in `payload`. One reader and one writer serve the
  /// whole chunk. An output that would take the frame past `limit` (the worker's
  /// `messageLimit`) becomes a `valueTooLarge` failure (refused before a big array is copied).
  /// The only output of a chunk, a `[UInt8]` of at least `apartFrom` bytes, is not copied into
  /// `payload`: it ends it, kept in `tail` (the worker copies it once, into shared memory).
  /// The loop over the items is `_runChunk`, compiled for `Self` where it conforms.
  func runChunk(
    _ inputs: InputBlocks, into payload: inout [UInt8], tail: inout [UInt8], apartFrom: Int, frameStart: Int,
    limit: Int
  ) async {
    ResultsPayload.appendOutcomeCount(inputs.count, to: &payload)
    let writer = ByteWriter(payload)
    writer.byteLimit = frameStart + limit
    payload = []
    defer { payload = writer.bytes }
    var chunk = _ProcessTaskChunk(inputs, writer: writer, frameStart: frameStart, apartFrom: apartFrom)
    await _runChunk(&chunk)
    tail = chunk.tail
  }
}
