/// One `run` frame's worth of work: a task over one input (a `submit`) or several (a `map`
/// chunk), with the futures it finishes.
final class Job: @unchecked Sendable {
  /// Set once by the pool when queued; read under the pool's lock afterwards.
  var id: UInt64 = 0
  /// The whole `run` frame: room for the header, filled in at dispatch, then the payload (task
  /// name, task value and the inputs). Handed to the socket's buffer without a copy (a large
  /// input is not copied once more), and kept for a requeue. Changed under the pool's lock only.
  var frame: [UInt8]
  let sink: any JobSink
  /// The per-task timeout for this job (each item of a chunk gets it).
  let timeout: Duration?

  /// `frame` starts with `Frame.headerSize` bytes of room (`Frame.emptyHeader`).
  init(frame: [UInt8], sink: any JobSink, timeout: Duration?) {
    self.frame = frame
    self.sink = sink
    self.timeout = timeout
  }
}

/// The futures a job finishes, with their output type erased.
protocol JobSink: Sendable {
  /// Marks the futures running; false when every one was cancelled (the job is skipped). Runs
  /// under the pool's lock, so it only changes state: see `acknowledgeCancel`.
  func start() -> Bool
  /// For a job `start` skipped: tells the cancelled futures' watchers that the pool saw the
  /// cancel (run with the pool's lock released, as it resumes their waiters).
  func acknowledgeCancel()
  /// Decodes a `results` payload and finishes the futures. A malformed payload fails them.
  func deliver(_ payload: UnsafeRawBufferPointer, workerPID: Int32)
  /// Fails every future not yet done, each with its own copy of `error`.
  func fail(_ error: ProcessPoolError)
  /// Cancels every future that has not started.
  func cancelAll()
  /// Whether one of its futures is the one with this identity.
  func contains(_ future: ObjectIdentifier) -> Bool
  /// Whether it was cancelled before it started (it is skipped when its turn comes).
  var isCancelled: Bool { get }
}

/// The sink of a submitted task: one input, one future (a `map` chunk has `MapChunkSink`).
struct TaskSink<Output: Codable & Sendable>: JobSink {
  let future: ProcessFuture<Output>

  func start() -> Bool { future.setRunning() }

  func acknowledgeCancel() { future.notifyCancel() }

  func deliver(_ payload: UnsafeRawBufferPointer, workerPID: Int32) {
    do {
      future.complete(try decodeOutcomes(Output.self, payload, expected: 1, workerPID: workerPID)[0])
    } catch {
      fail(malformedResults(error, workerPID: workerPID))
    }
  }

  func fail(_ error: ProcessPoolError) { future.complete(.failure(error)) }

  func cancelAll() { future.cancel() }

  func contains(_ future: ObjectIdentifier) -> Bool { ObjectIdentifier(self.future) == future }

  var isCancelled: Bool { future.isCancelled }
}

/// Decodes a `results` payload, `[u32 count]([u8 status][u32 length][bytes])*`, into one outcome
/// per input, with one reader for all of them. Throws only when the payload itself is malformed;
/// an output or error that does not decode becomes that item's `decodingFailed` outcome.
///
/// Inlinable so that a `map` decodes with code compiled for its output type (see `MapCodec`).
@inlinable
func decodeOutcomes<Output: Decodable>(
  _: Output.Type, _ payload: UnsafeRawBufferPointer, expected: Int, workerPID: Int32
) throws -> [Result<Output, any Error>] {
  var outcomes: [Result<Output, any Error>] = []
  outcomes.reserveCapacity(expected)
  let decoder = ByteReader(payload)
  try forEachOutcome(in: payload, expected: expected) { succeeded, block in
    guard succeeded else {
      outcomes.append(.failure(remoteFailure(block, workerPID: workerPID)))
      return
    }
    do {
      outcomes.append(.success(try BinaryDecoder.decode(Output.self, from: block, reusing: decoder)))
    } catch {
      outcomes.append(.failure(outputDecodingFailure(Output.self, error, workerPID: workerPID)))
    }
  }
  return outcomes
}

/// Walks the framing of a `results` payload: whether each outcome succeeded, and its block.
/// Throws when the count is not `expected`, a block is cut short or bytes follow the last one.
@usableFromInline
func forEachOutcome(
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
func remoteFailure(_ block: UnsafeRawBufferPointer, workerPID: Int32) -> any Error {
  do {
    return try BinaryDecoder.decode(RemoteErrorRecord.self, from: block).rebuild(workerPID: workerPID)
  } catch {
    return ProcessPoolError(.decodingFailed, "cannot decode the task's error: \(error)", workerPID: workerPID)
  }
}

@usableFromInline
func outputDecodingFailure(_ type: Any.Type, _ error: any Error, workerPID: Int32) -> ProcessPoolError {
  ProcessPoolError(.decodingFailed, "cannot decode the output as \(type): \(error)", workerPID: workerPID)
}
