/// One chunk of inputs as a worker runs it, and the `results` payload its outcomes go into. An
/// implementation detail of ``ProcessTask``: public only so that ``ProcessTask/_runChunk(_:)``
/// can be compiled for each task type. Do not use it.
public struct _ProcessTaskChunk {
  /// The input blocks, already checked to be whole (a view into the worker's read buffer).
  @usableFromInline var inputs: PayloadReader
  /// How many inputs.
  @usableFromInline let count: Int
  /// Where the outcomes go, after the count (see `ResultsPayload`).
  @usableFromInline let writer: ByteWriter
  /// Where the results frame starts in the writer's bytes (for the size in an error).
  @usableFromInline let frameStart: Int
  /// One reader for every input of the chunk.
  @usableFromInline let decoder = ByteReader(UnsafeRawBufferPointer(start: nil, count: 0))
  /// The only output of the chunk when it is a `[UInt8]` of at least `apartFrom` bytes: kept
  /// apart from the payload, which ends with its head (the worker copies it once, into shared
  /// memory).
  @usableFromInline var tail: [UInt8] = []
  @usableFromInline let apartFrom: Int

  init(_ inputs: InputBlocks, writer: ByteWriter, frameStart: Int, apartFrom: Int) {
    self.inputs = PayloadReader(inputs.bytes)
    self.count = inputs.count
    self.writer = writer
    self.frameStart = frameStart
    self.apartFrom = apartFrom
  }

  /// The next input, decoded; a failure is appended as that input's outcome and gives nil.
  @inlinable
  mutating func nextInput<T: ProcessTask>(of _: T.Type) -> T.Input? {
    do {
      return try BinaryDecoder.decode(T.Input.self, from: try inputs.block(), reusing: decoder)
    } catch {
      appendInputDecodingFailure(error, of: T.self)
      return nil
    }
  }

  /// Appends a success outcome: the output's encoding, or the failure to encode it (or only its
  /// head, the output kept in `tail`).
  @inlinable
  mutating func appendOutput<T: ProcessTask>(_ output: T.Output, of _: T.Type) {
    if count == 1, T.Output.self == [UInt8].self, keepApart(unsafeBitCast(output, to: [UInt8].self)) { return }
    ResultsPayload.appendSuccessOutcome(output, to: writer) { outputEncodingFailure($0, of: T.self) }
  }

  /// Appends the head of a large `[UInt8]` output and keeps the bytes in `tail`; false when it
  /// is too small for that (or too large for the frame: then it fails as it would encoded).
  @usableFromInline
  mutating func keepApart(_ output: [UInt8]) -> Bool {
    guard writer.appendBytesOutcomeHead(output, apartFrom: apartFrom) else { return false }
    tail = output
    return true
  }

  @usableFromInline
  func outputEncodingFailure(_ error: any Error, of task: Any.Type) -> any Error {
    ProcessPoolError.encoding(of: "the output of \(task) in the worker", error, messageStart: frameStart)
  }

  /// Appends the error `run` threw as the outcome.
  @usableFromInline
  func appendFailure(_ error: any Error) {
    ResultsPayload.appendFailureOutcome(error, to: writer)
  }

  @usableFromInline
  func appendInputDecodingFailure(_ error: any Error, of task: Any.Type) {
    ResultsPayload.appendFailureOutcome(
      ProcessPoolError(.decodingFailed, "cannot decode the input of \(task) in the worker: \(error)"), to: writer)
  }
}

extension ProcessTask {
  /// Runs ``run(_:)`` over each input of `chunk` in order and appends one outcome per input.
  /// The default, and the only implementation: do not implement or call it.
  @inlinable
  public func _runChunk(_ chunk: inout _ProcessTaskChunk) async {
    for _ in 0..<chunk.count {
      guard let input = chunk.nextInput(of: Self.self) else { continue }
      do {
        chunk.appendOutput(try await run(input), of: Self.self)
      } catch {
        chunk.appendFailure(error)
      }
    }
  }
}
