/// The `results` payload, written and read only here: `[u32 count]([u8 status][u32 length]
/// [bytes])*`, one outcome per input, each a success (the output's encoding) or a failure (a
/// `RemoteErrorRecord`). The worker writes it (`appendOutcomeCount`, then
/// `appendSuccessOutcome` or `appendFailureOutcome` per input); the pool checks it when it
/// arrives (`forEachOutcome`) and decodes it for the caller's output type (`decodeOutcomes`).
@usableFromInline
enum ResultsPayload {
  /// Decodes a `results` payload, `[u32 count]([u8 status][u32 length][bytes])*`, into one outcome
  /// per input, with one reader for all of them. Throws only when the payload itself is malformed;
  /// an output or error that does not decode becomes that item's `decodingFailed` outcome.
  ///
  /// Inlinable so that a `map` decodes with code compiled for its output type (see `MapCodec`).
  @inlinable
  static func decodeOutcomes<Output: Decodable>(
    _: Output.Type, _ payload: UnsafeRawBufferPointer, expected: Int, workerPID: Int32
  ) throws -> [Result<Output, any Error>] {
    var outcomes: [Result<Output, any Error>] = []
    outcomes.reserveCapacity(expected)
    try decodeOutcomes(Output.self, payload, expected: expected, workerPID: workerPID) { outcomes.append($0) }
    return outcomes
  }

  /// `decodeOutcomes`, handing each outcome to `emit` in order instead of collecting them (a map
  /// decodes a chunk straight into its ready buffer). Some may have been emitted when it throws.
  @inlinable
  static func decodeOutcomes<Output: Decodable>(
    _: Output.Type, _ payload: UnsafeRawBufferPointer, expected: Int, workerPID: Int32,
    _ emit: (consuming Result<Output, any Error>) -> Void
  ) throws {
    let decoder = ByteReader(payload)
    try forEachOutcome(in: payload, expected: expected) { succeeded, block in
      guard succeeded else {
        emit(.failure(remoteFailure(block, workerPID: workerPID)))
        return
      }
      do {
        emit(.success(try BinaryDecoder.decode(Output.self, from: block, reusing: decoder)))
      } catch {
        emit(.failure(outputDecodingFailure(Output.self, error, workerPID: workerPID)))
      }
    }
  }

  /// Walks the framing of a `results` payload: whether each outcome succeeded, and its block.
  /// Throws when the count is not `expected`, a block is cut short or bytes follow the last one.
  @usableFromInline
  static func forEachOutcome(
    in payload: UnsafeRawBufferPointer, expected: Int,
    _ body: (_ succeeded: Bool, _ block: UnsafeRawBufferPointer) -> Void
  ) throws {
    var reader = PayloadReader(payload)
    let count = Int(try reader.integer(UInt32.self))
    guard count == expected else { throw WireError("\(count) results for \(expected) inputs") }
    for _ in 0..<count {
      let status = try reader.integer(UInt8.self)
      body(status == Frame.Status.success.rawValue, try reader.block())
    }
    guard reader.isAtEnd else { throw WireError("trailing bytes after \(count) results") }
  }

  /// The error a task threw in the worker, rebuilt from its record.
  @usableFromInline
  static func remoteFailure(_ block: UnsafeRawBufferPointer, workerPID: Int32) -> any Error {
    do {
      return try BinaryDecoder.decode(RemoteErrorRecord.self, from: block).rebuild(workerPID: workerPID)
    } catch {
      return ProcessPoolError(.decodingFailed, "cannot decode the task's error: \(error)", workerPID: workerPID)
    }
  }

  @usableFromInline
  static func outputDecodingFailure(_ type: Any.Type, _ error: any Error, workerPID: Int32) -> ProcessPoolError {
    ProcessPoolError(.decodingFailed, "cannot decode the output as \(type): \(error)", workerPID: workerPID)
  }

  /// The initializer's outcome (a `results` payload of one outcome, request id 0): nil when it
  /// succeeded, else its error in words. Throws when the payload is malformed.
  static func initializerFailure(in payload: UnsafeRawBufferPointer) throws -> String? {
    var failure: String?
    try forEachOutcome(in: payload, expected: 1) { succeeded, block in
      guard !succeeded else { return }
      failure =
        (try? BinaryDecoder.decode(RemoteErrorRecord.self, from: block))
        .map { "\($0.typeName): \($0.description)" } ?? "an error that could not be decoded"
    }
    return failure
  }

  /// The error of a `results` payload whose framing is broken.
  @usableFromInline
  static func malformedResults(_ error: any Error, workerPID: Int32) -> ProcessPoolError {
    ProcessPoolError(.protocolViolation, "malformed results from the worker: \(error)", workerPID: workerPID)
  }

  /// Starts a `results` payload: how many outcomes follow.
  static func appendOutcomeCount(_ count: Int, to payload: inout [UInt8]) {
    payload.appendLittleEndian(UInt32(count))
  }

  /// Appends a success outcome: `value`'s encoding as a block. When it cannot be encoded (or would
  /// pass the writer's byte limit), nothing of it is left and the failure `encodingFailure` makes
  /// of the error is appended instead. Inlinable: it runs for every output in the worker's hot
  /// path, compiled for the task's output type (see `ProcessTask._runChunk`).
  @inlinable
  static func appendSuccessOutcome<T: Encodable>(
    _ value: T, to writer: ByteWriter, encodingFailure: (any Error) -> any Error
  ) {
    let mark = beginSuccessOutcome(in: writer)
    do {
      try writer.appendBlock(value)
    } catch {
      replaceOutcome(from: mark, in: writer, withFailure: encodingFailure(error))
    }
  }

  /// Appends a success status; returns where the outcome starts.
  @usableFromInline
  static func beginSuccessOutcome(in writer: ByteWriter) -> Int {
    let mark = writer.bytes.count
    writer.bytes.append(Frame.Status.success.rawValue)
    return mark
  }

  /// Drops the outcome that starts at `mark` and appends `error` as a failure in its place.
  @usableFromInline
  static func replaceOutcome(from mark: Int, in writer: ByteWriter, withFailure error: any Error) {
    writer.bytes.removeSubrange(mark...)
    appendFailureOutcome(error, to: writer)
  }

  /// Appends a success outcome with no value (an initializer's).
  static func appendEmptySuccessOutcome(to payload: inout [UInt8]) {
    payload.append(Frame.Status.success.rawValue)
    payload.appendLittleEndian(UInt32(0))
  }

  /// Appends a failure outcome: the error as a `RemoteErrorRecord` block.
  static func appendFailureOutcome(_ error: any Error, to payload: inout [UInt8]) {
    payload.withByteWriter { appendFailureOutcome(error, to: $0) }
  }

  static func appendFailureOutcome(_ error: any Error, to writer: ByteWriter) {
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
}
