/// How a task runs in the worker: opened from `any ProcessTask.Type`, it decodes its own value
/// and inputs, runs, and writes one outcome per input into a `results` payload.
extension ProcessTask {
  static func decodeTask(_ bytes: UnsafeRawBufferPointer) throws -> any ProcessTask {
    try BinaryDecoder.decode(Self.self, from: bytes)
  }

  /// Runs `self` over each input block and appends `[u32 count]([u8 status][u32 length][bytes])*`.
  func runChunk(_ inputs: InputBlocks, into payload: inout [UInt8]) async {
    payload.appendLittleEndian(UInt32(inputs.count))
    var reader = PayloadReader(inputs.bytes)
    for _ in 0..<inputs.count {
      let outcome: Result<Output, any Error>
      do {
        let value = try BinaryDecoder.decode(Input.self, from: try reader.block())
        outcome = await Result { () async throws -> Output in try await run(value) }
      } catch {
        outcome = .failure(
          ProcessPoolError(.decodingFailed, "cannot decode the input of \(Self.self) in the worker: \(error)"))
      }
      Self.append(outcome, to: &payload)
    }
  }

  private static func append(_ outcome: Result<Output, any Error>, to payload: inout [UInt8]) {
    let mark = payload.count
    if case .success(let value) = outcome {
      payload.append(Frame.Status.success.rawValue)
      do {
        try payload.appendEncodedBlock(value)
        return
      } catch {
        payload.removeSubrange(mark...)
        appendFailureOutcome(
          ProcessPoolError(.encodingFailed, "cannot encode the output of \(Self.self) in the worker: \(error)"),
          to: &payload)
        return
      }
    }
    if case .failure(let error) = outcome { appendFailureOutcome(error, to: &payload) }
  }
}

/// Appends a failure outcome: the error as a `RemoteErrorRecord` block.
func appendFailureOutcome(_ error: any Error, to payload: inout [UInt8]) {
  payload.append(Frame.Status.failure.rawValue)
  let record = RemoteErrorRecord(error)
  do {
    try payload.appendEncodedBlock(record)
  } catch {
    let fallback = RemoteErrorRecord(ProcessPoolError(.encodingFailed, "cannot encode an error: \(error)"))
    try! payload.appendEncodedBlock(fallback)
  }
}

extension Result where Failure == any Error {
  init(_ body: () async throws -> Success) async {
    do {
      self = .success(try await body())
    } catch {
      self = .failure(error)
    }
  }
}

extension Array where Element == UInt8 {
  /// Appends `[u32 length][encoding of value]`, patching the length after encoding in place.
  mutating func appendEncodedBlock<T: Encodable>(_ value: T) throws {
    let start = count
    appendLittleEndian(UInt32(0))
    do {
      try BinaryEncoder.encode(value, into: &self)
    } catch {
      removeSubrange(start...)
      throw error
    }
    let length = UInt32(count - start - 4)
    withUnsafeMutableBytes { $0.storeBytes(of: length.littleEndian, toByteOffset: start, as: UInt32.self) }
  }
}
