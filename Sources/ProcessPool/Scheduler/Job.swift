/// One `run` frame's worth of work: a task over one input (a `submit`) or several (a `map`
/// chunk), with the futures it finishes.
final class Job: @unchecked Sendable {
  /// Set once by the pool when queued; read under the pool's lock afterwards.
  var id: UInt64 = 0
  /// The frame's payload: task name, task value and the inputs (the header is added at dispatch).
  let payload: [UInt8]
  let sink: any JobSink
  /// The per-task timeout for this job (each item of a chunk gets it).
  let timeout: Duration?

  init(payload: [UInt8], sink: any JobSink, timeout: Duration?) {
    self.payload = payload
    self.sink = sink
    self.timeout = timeout
  }
}

/// The futures a job finishes, with their output type erased.
protocol JobSink: Sendable {
  /// Marks the futures running; false when every one was cancelled (the job is skipped).
  func start() -> Bool
  /// Decodes a `results` payload and finishes the futures. A malformed payload fails them.
  func deliver(_ payload: UnsafeRawBufferPointer, workerPID: Int32)
  /// Fails every future not yet done, each with its own copy of `error`.
  func fail(_ error: ProcessPoolError)
  /// Cancels every future that has not started.
  func cancelAll()
  /// Whether one of its futures is the one with this identity.
  func contains(_ future: ObjectIdentifier) -> Bool
}

/// The sink of a submitted task: one input, one future (a `map` chunk has `MapChunkSink`).
struct TaskSink<Output: Codable & Sendable>: JobSink {
  let future: ProcessFuture<Output>

  func start() -> Bool { future.setRunningOrNotifyCancel() }

  func deliver(_ payload: UnsafeRawBufferPointer, workerPID: Int32) {
    do {
      future.complete(try decodeOutcomes(Output.self, payload, expected: 1, workerPID: workerPID)[0])
    } catch {
      fail(ProcessPoolError(.protocolViolation, "malformed results from the worker: \(error)", workerPID: workerPID))
    }
  }

  func fail(_ error: ProcessPoolError) { future.complete(.failure(error)) }

  func cancelAll() { future.cancel() }

  func contains(_ future: ObjectIdentifier) -> Bool { ObjectIdentifier(self.future) == future }
}

/// Decodes a `results` payload, `[u32 count]([u8 status][u32 length][bytes])*`, into one outcome
/// per input, with one reader for all of them. Throws only when the payload itself is malformed;
/// an output or error that does not decode becomes that item's `decodingFailed` outcome.
func decodeOutcomes<Output: Decodable>(
  _: Output.Type, _ payload: UnsafeRawBufferPointer, expected: Int, workerPID: Int32
) throws -> [Result<Output, any Error>] {
  var reader = PayloadReader(payload)
  let count = Int(try reader.integer(UInt32.self))
  guard count == expected else { throw WireError("\(count) results for \(expected) inputs") }
  var outcomes: [Result<Output, any Error>] = []
  outcomes.reserveCapacity(count)
  let decoder = ByteReader(payload)
  for _ in 0..<count {
    let status = try reader.integer(UInt8.self)
    let block = try reader.block()
    outcomes.append(decodeOutcome(Output.self, status: status, block, decoder, workerPID: workerPID))
  }
  return outcomes
}

private func decodeOutcome<Output: Decodable>(
  _: Output.Type, status: UInt8, _ block: UnsafeRawBufferPointer, _ decoder: ByteReader, workerPID: Int32
) -> Result<Output, any Error> {
  if status == Frame.Status.success.rawValue {
    do {
      return .success(try BinaryDecoder.decode(Output.self, from: block, reusing: decoder))
    } catch {
      return .failure(
        ProcessPoolError(.decodingFailed, "cannot decode the output as \(Output.self): \(error)", workerPID: workerPID))
    }
  }
  do {
    let record = try BinaryDecoder.decode(RemoteErrorRecord.self, from: block)
    return .failure(record.rebuild(workerPID: workerPID))
  } catch {
    return .failure(ProcessPoolError(.decodingFailed, "cannot decode the task's error: \(error)", workerPID: workerPID))
  }
}
