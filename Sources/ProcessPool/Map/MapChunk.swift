/// The outcomes of a chunk's inputs, in input order.
struct ChunkOutcomes<Output: Sendable>: Sendable {
  var items: [Result<Output, any Error>] = []
  /// How many of them are failures (counted while decoding, for the progress).
  var failed = 0
}

/// One chunk of a `map`: a single future for the whole chunk (one lock, one wake-up and one
/// progress update per chunk instead of per item), and the inputs that could not be encoded,
/// which never reach a worker and fail at their own position.
struct MapChunk<Output: Sendable> {
  /// The outputs of the inputs that were sent; nil when none could be encoded.
  let future: ProcessFuture<ChunkOutcomes<Output>>?
  /// How many inputs the chunk holds, sent or not.
  let count: Int
  /// The inputs that could not be encoded, by position in the chunk (rare: usually empty).
  let encodingFailures: [Int: ProcessPoolError]

  /// Every item's outcome in input order, given the outcomes of those that were sent (or the
  /// error that failed them all).
  func outcomes(_ sent: Result<ChunkOutcomes<Output>, any Error>) -> [Result<Output, any Error>] {
    switch sent {
    case .success(let outcomes) where encodingFailures.isEmpty:
      return outcomes.items
    case .failure(let error) where encodingFailures.isEmpty:
      return Array(repeating: .failure(error), count: count)
    default:
      var all: [Result<Output, any Error>] = []
      all.reserveCapacity(count)
      var next = 0
      for position in 0..<count {
        if let failure = encodingFailures[position] {
          all.append(.failure(failure))
          continue
        }
        switch sent {
        case .success(let outcomes): all.append(outcomes.items[next])
        case .failure(let error): all.append(.failure(error))
        }
        next += 1
      }
      return all
    }
  }
}

/// The sink of a map chunk: decodes all of its outcomes and finishes the chunk's future once.
struct MapChunkSink<Output: Codable & Sendable>: JobSink {
  let future: ProcessFuture<ChunkOutcomes<Output>>
  let count: Int

  func start() -> Bool { future.setRunningOrNotifyCancel() }

  func deliver(_ payload: UnsafeRawBufferPointer, workerPID: Int32) {
    do {
      future.complete(.success(try decodeOutcomes(Output.self, payload, expected: count, workerPID: workerPID)))
    } catch {
      fail(ProcessPoolError(.protocolViolation, "malformed results from the worker: \(error)", workerPID: workerPID))
    }
  }

  func fail(_ error: ProcessPoolError) { future.complete(.failure(error)) }

  func cancelAll() { future.cancel() }

  func contains(_ future: ObjectIdentifier) -> Bool { ObjectIdentifier(self.future) == future }
}
