/// A finished chunk as the map's iterator gets it: the outcomes of the inputs that were sent (or
/// the error that failed them all), still encoded, and the inputs that could not be encoded.
@usableFromInline
struct FinishedChunk {
  @usableFromInline let sent: Result<RawOutcomes, any Error>
  @usableFromInline let count: Int
  @usableFromInline let encodingFailures: [Int: ProcessPoolError]

  /// Hands every item's outcome to `emit` in input order, decoded straight from the payload
  /// (no array in between) when every input was sent. Inlinable: it runs compiled for the
  /// caller's output type.
  @inlinable
  func forEachOutcome<Output: Decodable>(
    _: Output.Type, _ emit: (consuming Result<Output, any Error>) -> Void
  ) {
    guard encodingFailures.isEmpty, case .success(let raw) = sent, count > 0 else {
      for outcome in outcomes(Output.self) { emit(outcome) }
      return
    }
    var emitted = 0
    let malformed = raw.payload.withUnsafeBytes { payload -> (any Error)? in
      do {
        try ResultsPayload.decodeOutcomes(Output.self, payload, expected: count, workerPID: raw.workerPID) {
          emitted += 1
          emit($0)
        }
        return nil
      } catch {
        return error
      }
    }
    // Checked when it arrived, so not expected. What was emitted stands and the rest fail: still
    // exactly `count` outcomes.
    if let malformed {
      let failure = ResultsPayload.malformedResults(malformed, workerPID: raw.workerPID)
      for _ in emitted..<count { emit(.failure(failure)) }
    }
  }

  /// Every item's outcome in input order. Inlinable: it runs compiled for the caller's output
  /// type.
  @inlinable
  func outcomes<Output: Decodable>(_: Output.Type) -> [Result<Output, any Error>] {
    let sentCount = count - encodingFailures.count
    var decoded: [Result<Output, any Error>]
    switch sent {
    case .success where sentCount == 0:
      decoded = []
    case .success(let raw):
      do {
        decoded = try raw.payload.withUnsafeBytes {
          try ResultsPayload.decodeOutcomes(Output.self, $0, expected: sentCount, workerPID: raw.workerPID)
        }
      } catch {
        // Checked when it arrived, so not expected; failed as a whole if it happens.
        decoded = Array(
          repeating: .failure(ResultsPayload.malformedResults(error, workerPID: raw.workerPID)), count: sentCount)
      }
    case .failure(let error):
      decoded = Array(repeating: .failure(error), count: sentCount)
    }
    guard !encodingFailures.isEmpty else { return decoded }
    var all: [Result<Output, any Error>] = []
    all.reserveCapacity(count)
    var next = 0
    for position in 0..<count {
      if let failure = encodingFailures[position] {
        all.append(.failure(failure))
      } else {
        all.append(decoded[next])
        next += 1
      }
    }
    return all
  }
}
