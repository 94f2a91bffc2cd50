/// One `run` frame's worth of work: a task over one input (a `submit`) or several (a `map`
/// chunk), with the futures it finishes. A map's chunks wait in the queue as a `JobBatch` and
/// get their `Job` only when a worker takes them.
final class Job: @unchecked Sendable {
  /// Set by the pool, under its lock, each time the job is handed to a worker (a job put back in
  /// the queue gets a new one): a result names the job by it.
  var id: UInt64 = 0
  /// The whole `run` frame: room for the header, filled in at dispatch, then the payload (task
  /// name, task value and the inputs). Handed to the socket's buffer without a copy (a large
  /// input is not copied once more), and kept for a requeue. Changed under the pool's lock only.
  var frame: [UInt8]
  /// A large `[UInt8]` input that ends the frame, kept apart from it (empty for other jobs): it
  /// is copied once, into the worker's shared memory, instead of first into `frame` too.
  let tail: [UInt8]
  let sink: any JobSink
  /// The per-task timeout for this job (each item of a chunk gets it).
  var timeout: Duration? { timeoutOrZero == .zero ? nil : timeoutOrZero }
  /// `timeout`, zero for none (a timeout is positive): a `Duration?` would take the object past
  /// 96 bytes, into the next allocation size (every task sent holds one `Job`).
  private let timeoutOrZero: Duration

  /// `frame` starts with `Frame.headerSize` bytes of room (`Frame.emptyHeader`); the frame's
  /// payload is the rest of it followed by `tail`.
  init(frame: [UInt8], tail: [UInt8] = [], sink: any JobSink, timeout: Duration?) {
    self.frame = frame
    self.tail = tail
    self.sink = sink
    self.timeoutOrZero = timeout ?? .zero
  }

  /// The whole frame's size, `tail` included.
  var frameSize: Int { frame.count + tail.count }
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
  /// Whether it finishes the future with this identity (a map chunk: chunk `chunk` of the batch
  /// with this identity).
  func contains(_ future: ObjectIdentifier, chunk: Int) -> Bool
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

  func contains(_ future: ObjectIdentifier, chunk: Int) -> Bool { ObjectIdentifier(self.future) == future }

  var isCancelled: Bool { future.isCancelled }
}

/// Chunks of a `map` queued together (one batch pulled from its input), as the pool's queue holds
/// them: their inputs share one buffer, and a chunk's `Job` (its frame, with the map's task) is
/// made only when a worker takes it, so a queued chunk holds no object of its own.
protocol JobBatch: AnyObject, Sendable {
  /// How many chunks (jobs) the batch holds.
  var jobCount: Int { get }
  /// Makes the job of chunk `index`, or nil when it needs no worker (it was cancelled, or none of
  /// its inputs could be encoded). Called under the pool's lock, once per chunk, in order.
  func job(at index: Int) -> Job?
  /// How many chunks from `index` on are still to run (neither cancelled nor done).
  func liveCount(from index: Int) -> Int
  /// The chunks from `index` on, not made into jobs, as one sink: to cancel or fail them all.
  func remainder(from index: Int) -> any JobSink
}
