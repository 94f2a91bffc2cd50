import Synchronization

/// The chunks of a `map` pulled in one go (a batch of about `ChunkSource.submitBatch` inputs):
/// what a queued chunk costs. Their encoded inputs share one buffer and their outcomes one
/// array; the map's task (name and value) is kept once per map, in `ChunkSource.header`. A
/// chunk's frame, `Job` and sink are made only when a worker takes it (`job(at:)`), and no chunk
/// has a future: its outcome is kept here until the map's iterator takes it, and `ChunkArrivals`
/// wakes the iterator.
///
/// `@unchecked Sendable`: `inputs` and `frames` are touched by the thread that made the batch,
/// then only under the pool's lock; `unyielded` only by the one iterating task; the chunks'
/// phases and outcomes are under `state`.
final class MapBatch: JobBatch, @unchecked Sendable {
  let source: ChunkSource
  /// The position of the first chunk's first input in the map's input.
  let start: Int
  /// Each chunk's `[u32 count](block)*` back to back; chunk `i` ends at `ends[i]`. Let go of
  /// when the last chunk's turn comes in the pool's queue (a job keeps its own frame).
  @exclusivity(unchecked) private var inputs: [UInt8]
  private let ends: [Int]
  /// Chunks too big to share `inputs`: their whole frame, made as they were pulled and handed
  /// to their job without a copy (or dropped when their turn comes, if they were cancelled).
  @exclusivity(unchecked) private var frames: [Int: [UInt8]]
  /// How many inputs the last chunk holds (the others hold the map's chunksize).
  private let lastCount: Int
  /// By chunk, the inputs that could not be encoded, by position in the chunk (rare).
  private let failures: [Int: [Int: ProcessPoolError]]
  /// Chunks not yet handed to the map's iterator (unordered maps).
  @exclusivity(unchecked) var unyielded: Int

  enum Phase: UInt8 {
    case pending, running, cancelled, finished
  }
  private struct State {
    var phases: [Phase]
    /// A chunk's outcome from when it is done until the iterator takes it.
    var outcomes: [Result<RawOutcomes, any Error>?]
  }
  private let state: Mutex<State>

  /// A batch of the chunks pulled into `inputs` (ending at `ends`) and `frames`. A chunk none
  /// of whose inputs could be encoded is finished at once, and ready for the iterator.
  init(
    source: ChunkSource, start: Int, inputs: [UInt8], ends: [Int], frames: [Int: [UInt8]], lastCount: Int,
    failures: [Int: [Int: ProcessPoolError]]
  ) {
    self.source = source
    self.start = start
    self.inputs = inputs
    self.ends = ends
    self.frames = frames
    self.lastCount = lastCount
    self.failures = failures
    unyielded = ends.count
    var initial = State(
      phases: Array(repeating: .pending, count: ends.count), outcomes: Array(repeating: nil, count: ends.count))
    var empty: [Int] = []
    for (chunk, failed) in failures where failed.count == (chunk == ends.count - 1 ? lastCount : source.chunksize) {
      initial.phases[chunk] = .finished
      initial.outcomes[chunk] = .success(RawOutcomes())
      empty.append(chunk)
    }
    state = Mutex(initial)
    for chunk in empty { source.arrivals.arrived(self, chunk) }
  }

  /// How many chunks the batch holds.
  var count: Int { ends.count }

  /// How many inputs chunk `index` holds, sent or not.
  func count(of index: Int) -> Int { index == ends.count - 1 ? lastCount : source.chunksize }

  /// The position of chunk `index`'s first input in the map's input.
  func position(of index: Int) -> Int { start + index * source.chunksize }

  /// The inputs of chunk `index` that could not be encoded, by position in the chunk.
  func encodingFailures(of index: Int) -> [Int: ProcessPoolError] {
    failures.isEmpty ? [:] : failures[index] ?? [:]
  }

  /// How many inputs of chunk `index` were sent to a worker (those that could be encoded).
  func sentCount(of index: Int) -> Int {
    count(of: index) - (failures.isEmpty ? 0 : failures[index]?.count ?? 0)
  }

  /// The outcome of chunk `index` if it is done, which the batch lets go of (taken once).
  func takeOutcome(_ index: Int) -> Result<RawOutcomes, any Error>? {
    state.withLock { state in
      guard let outcome = state.outcomes[index] else { return nil }
      state.outcomes[index] = nil
      return outcome
    }
  }

  /// Whether chunk `index` is done (finished or cancelled).
  func isDone(_ index: Int) -> Bool {
    state.withLock { $0.phases[index] == .finished || $0.phases[index] == .cancelled }
  }

  // MARK: The pool's side (JobBatch)

  var jobCount: Int { ends.count }

  func job(at index: Int) -> Job? {
    // Nothing reads the inputs once the last chunk's turn has come (a job keeps its frame).
    defer { if index == ends.count - 1 { inputs = [] } }
    // Checked for emptiness first: a batch of small chunks has none, and a lookup hashes.
    let own = frames.isEmpty ? nil : frames.removeValue(forKey: index)
    guard state.withLock({ $0.phases[index] == .pending }) else { return nil }
    let frame: [UInt8]
    if let own {
      frame = own
    } else {
      let from = index == 0 ? 0 : ends[index - 1]
      var built: [UInt8] = []
      built.reserveCapacity(source.header.count + ends[index] - from)
      built += source.header
      built += inputs[from..<ends[index]]
      frame = built
    }
    return Job(frame: frame, sink: MapChunkSink(batch: self, index: index), timeout: source.taskTimeout)
  }

  func liveCount(from index: Int) -> Int {
    state.withLock { state in state.phases[index...].reduce(0) { $0 + ($1 == .pending ? 1 : 0) } }
  }

  func remainder(from index: Int) -> any JobSink { MapBatchRemainder(batch: self, from: index) }

  // MARK: Chunks' transitions

  /// Pending becomes running; false when the chunk was cancelled or is done.
  func setRunning(_ index: Int) -> Bool {
    state.withLock { state in
      switch state.phases[index] {
      case .pending:
        state.phases[index] = .running
        return true
      case .running: return true
      case .cancelled, .finished: return false
      }
    }
  }

  /// Finishes chunk `index` with `outcome` unless it is done already.
  func complete(_ index: Int, _ outcome: Result<RawOutcomes, any Error>) {
    let finished = state.withLock { state -> Bool in
      guard state.phases[index] == .pending || state.phases[index] == .running else { return false }
      state.phases[index] = .finished
      state.outcomes[index] = outcome
      return true
    }
    if finished { announce(index, outcome) }
  }

  /// Fails every chunk from `index` on that is not done.
  func fail(from index: Int, _ error: ProcessPoolError) {
    for chunk in index..<ends.count { complete(chunk, .failure(error)) }
  }

  /// Cancels the chunks from `index` on that have not started; with `terminatingWorker`, also
  /// stops the workers running the others (as `ProcessFuture.cancel(terminatingWorker:)`).
  func cancel(from index: Int, terminatingWorker: Bool) {
    cancel(index..<ends.count, terminatingWorker: terminatingWorker)
  }

  /// Cancels the chunks in `chunks` (as `cancel(from:terminatingWorker:)`).
  func cancel(_ chunks: Range<Int>, terminatingWorker: Bool) {
    let error = ProcessPoolError(.cancelled, "the future was cancelled before it started")
    let (cancelled, running) = state.withLock { state -> ([Int], [Int]) in
      var cancelled: [Int] = []
      var running: [Int] = []
      for chunk in chunks {
        switch state.phases[chunk] {
        case .pending:
          state.phases[chunk] = .cancelled
          state.outcomes[chunk] = .failure(error)
          cancelled.append(chunk)
        case .running: running.append(chunk)
        case .cancelled, .finished: break
        }
      }
      return (cancelled, running)
    }
    for chunk in cancelled { announce(chunk, .failure(error)) }
    guard terminatingWorker else { return }
    for chunk in running { stopRunning(chunk) }
  }

  /// Stops the worker running chunk `index`, if it runs it (not queued behind another job).
  private func stopRunning(_ index: Int) {
    guard let finishJob = source.stopWorker.stopWorker(running: ObjectIdentifier(self), chunk: index) else {
      return
    }
    let error = ProcessPoolError(.cancelled, "the task was cancelled while running; its worker was stopped")
    let cancelled = state.withLock { state -> Bool in
      guard state.phases[index] == .running else { return false }
      state.phases[index] = .cancelled
      state.outcomes[index] = .failure(error)
      return true
    }
    if cancelled { announce(index, .failure(error)) }
    finishJob()
  }

  /// Counts a chunk that just finished in the progress, and tells the iterator.
  private func announce(_ index: Int, _ outcome: Result<RawOutcomes, any Error>) {
    source.progress.record(outcome, count: sentCount(of: index))
    source.arrivals.arrived(self, index)
  }

  func isCancelled(_ index: Int) -> Bool { state.withLock { $0.phases[index] == .cancelled } }
}

/// The sink of one chunk of a batch, made with its job: checks and keeps the chunk's results.
struct MapChunkSink: JobSink {
  let batch: MapBatch
  let index: Int

  func start() -> Bool { batch.setRunning(index) }

  /// A chunk's cancel is told to the iterator at once: nothing to acknowledge.
  func acknowledgeCancel() {}

  func deliver(_ payload: UnsafeRawBufferPointer, workerPID: Int32) {
    do {
      let outcomes = try RawOutcomes(payload, expected: batch.sentCount(of: index), workerPID: workerPID)
      batch.complete(index, .success(outcomes))
    } catch {
      fail(ResultsPayload.malformedResults(error, workerPID: workerPID))
    }
  }

  func fail(_ error: ProcessPoolError) { batch.complete(index, .failure(error)) }

  func cancelAll() { batch.cancel(index..<index + 1, terminatingWorker: false) }

  func contains(_ future: ObjectIdentifier, chunk: Int) -> Bool {
    ObjectIdentifier(batch) == future && chunk == index
  }

  var isCancelled: Bool { batch.isCancelled(index) }
}

/// A batch's chunks still in the pool's queue, when the queue is emptied (a shutdown cancels
/// them, a broken pool fails them).
struct MapBatchRemainder: JobSink {
  let batch: MapBatch
  let from: Int

  func start() -> Bool { false }
  func acknowledgeCancel() {}
  func deliver(_ payload: UnsafeRawBufferPointer, workerPID: Int32) {}
  func fail(_ error: ProcessPoolError) { batch.fail(from: from, error) }
  func cancelAll() { batch.cancel(from: from, terminatingWorker: false) }
  func contains(_ future: ObjectIdentifier, chunk: Int) -> Bool { false }
  var isCancelled: Bool { batch.liveCount(from: from) == 0 }
}
