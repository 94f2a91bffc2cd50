/// One `run` frame's worth of work: a task over one input (a `submit`) or several (a `map`
/// chunk), with the futures it finishes.
final class Job: @unchecked Sendable {
  /// Set by the pool, under its lock, each time the job is handed to a worker (a job put back in
  /// the queue gets a new one): a result names the job by it.
  var id: UInt64 = 0
  /// The whole `run` frame: room for the header, filled in at dispatch, then the payload (task
  /// name, task value and the inputs). Handed to the socket's buffer without a copy (a large
  /// input is not copied once more), and kept for a requeue. Changed under the pool's lock only.
  var frame: [UInt8]
  let sink: any JobSink
  /// The per-task timeout for this job (each item of a chunk gets it).
  var timeout: Duration? { timeoutOrZero == .zero ? nil : timeoutOrZero }
  /// `timeout`, zero for none (a timeout is positive): a `Duration?` would take the object past
  /// 88 bytes, into the next allocation size (a queued map chunk holds one `Job`).
  private let timeoutOrZero: Duration

  /// `frame` starts with `Frame.headerSize` bytes of room (`Frame.emptyHeader`).
  init(frame: [UInt8], sink: any JobSink, timeout: Duration?) {
    self.frame = frame
    self.sink = sink
    self.timeoutOrZero = timeout ?? .zero
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
      future.complete(try ResultsPayload.decodeOutcomes(Output.self, payload, expected: 1, workerPID: workerPID)[0])
    } catch {
      fail(ResultsPayload.malformedResults(error, workerPID: workerPID))
    }
  }

  func fail(_ error: ProcessPoolError) { future.complete(.failure(error)) }

  func cancelAll() { future.cancel() }

  func contains(_ future: ObjectIdentifier) -> Bool { ObjectIdentifier(self.future) == future }

  var isCancelled: Bool { future.isCancelled }
}
