/// The per-item code of a `map`: pulling and encoding the inputs, decoding the outcomes. Built by
/// the inlinable `map` in the caller's module, so it is compiled for the concrete input, output
/// and sequence types. The library's own generic code runs unspecialised, which costs runtime
/// metadata lookups and value-witness calls for every item; here it costs one closure call per
/// chunk.
@usableFromInline
struct MapCodec<Output: Codable & Sendable> {
  /// Pulls up to `count` inputs and appends each as a block; returns how many were pulled and,
  /// by position, the error of each that could not be encoded (its block is left out).
  @usableFromInline let pull: (_ count: Int, _ writer: ByteWriter) -> (pulled: Int, failures: [Int: ProcessPoolError])
  /// Decodes a `results` payload of `expected` outcomes.
  @usableFromInline let decode:
    (_ payload: UnsafeRawBufferPointer, _ expected: Int, _ workerPID: Int32) throws -> [Result<Output, any Error>]

  @inlinable
  init<T: ProcessTask, Inputs: IteratorProtocol>(
    _: T.Type, _ inputs: Inputs
  ) where T.Output == Output, Inputs.Element == T.Input {
    var inputs = inputs
    pull = { count, writer in
      var pulled = 0
      var failures: [Int: ProcessPoolError] = [:]
      while pulled < count, let input = inputs.next() {
        do {
          try writer.appendBlock(input)
        } catch {
          failures[pulled] = inputEncodingFailure(T.self, error)
        }
        pulled += 1
      }
      return (pulled, failures)
    }
    decode = { payload, expected, workerPID in
      try decodeOutcomes(Output.self, payload, expected: expected, workerPID: workerPID)
    }
  }
}

/// The error of a map input that cannot be encoded.
@usableFromInline
func inputEncodingFailure(_ task: Any.Type, _ error: any Error) -> ProcessPoolError {
  ProcessPoolError(.encodingFailed, "cannot encode an input of \(task): \(error)")
}
