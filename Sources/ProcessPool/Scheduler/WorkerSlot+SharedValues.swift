/// Large `run` payloads go to a local worker through the memory it shares with the parent (see
/// `SharedValues`; the runtime places them there when it queues the frame) rather than its socket.
extension WorkerSlot {
  /// Why `job` cannot be sent to this worker, if it cannot: its frame is too big for the socket
  /// and the worker has no shared memory for it (one whose regions could not be made, in a pool
  /// whose inputs may be bigger than a frame because all its workers are local).
  func refusal(of job: Job) -> ProcessPoolError? {
    let limit = Frame.sendLimit.load(ordering: .relaxed)
    guard job.frameSize > limit, !sharesMemory else { return nil }
    return ProcessPoolError(
      .valueTooLarge,
      "the inputs take \(job.frameSize) bytes, more than the limit of \(limit) bytes of one message to a worker "
        + "without shared memory")
  }

  /// Whether the region toward this worker surely has room for `job` now: a small job does not
  /// go there; a large one fits when the large jobs the worker holds and it take at most
  /// `SharedValues.inflightBudget` together, or when it holds none. (With no room, a frame would
  /// fall back to the socket, which refuses one over `Frame.sendLimit`.)
  func hasSharedRoom(for job: Job) -> Bool {
    guard sharesMemory, job.frameSize >= SharedValues.threshold else { return true }
    var held = 0
    for other in inflight where other.frameSize >= SharedValues.threshold {
      held += SharedValues.roundUp(other.frameSize)
    }
    return held == 0
      || held + SharedValues.roundUp(job.frameSize) <= SharedValues.inflightBudget.load(ordering: .relaxed)
  }
}

extension ProcessPoolExecutor.Configuration {
  /// The largest frame a caller may build for this pool: a local worker takes big values
  /// through shared memory, a launched one (maybe on another host) only through its socket.
  var messageLimit: Int {
    allLocal ? SharedValues.limit.load(ordering: .relaxed) : Frame.sendLimit.load(ordering: .relaxed)
  }

  /// Whether every worker is started here (none by a launcher), so shares memory with the pool
  /// unless mapping it failed.
  var allLocal: Bool { launchers.allSatisfy { $0.arguments == nil } }

  /// The `Job.tail` for a submitted `input`: the input itself when it is a `[UInt8]` big enough
  /// to go through shared memory (`SharedValues.threshold`) and every worker is local, else
  /// empty (the input is encoded into the frame).
  func tail<Input>(for input: Input) -> [UInt8] {
    guard Input.self == [UInt8].self else { return [] }
    let bytes = unsafeBitCast(input, to: [UInt8].self)
    return bytes.count >= SharedValues.threshold && allLocal ? bytes : []
  }
}
