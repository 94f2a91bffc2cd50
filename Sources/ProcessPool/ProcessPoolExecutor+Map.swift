extension ProcessPoolExecutor {
  /// Runs `task` over every input and yields the outputs **in input order** while the workers
  /// evaluate them out of order.
  ///
  /// ```swift
  /// for try await n in try pool.map(Countdown(), inputs, chunksize: 64) { … }
  /// ```
  ///
  /// - Parameters:
  ///   - task: The task to run; it is encoded once and sent with every chunk.
  ///   - inputs: Any sequence of inputs, finite or not. Its elements are encoded as they are
  ///     submitted.
  ///   - chunksize: Inputs sent per message: the main lever for small tasks. Default: about four
  ///     chunks per worker when the input's size is known (`underestimatedCount`), else 1.
  ///   - buffersize: At most this many chunks in flight, pulled as the iteration consumes them,
  ///     so an infinite sequence runs in bounded memory even when the results are read slowly.
  ///     Default: all of the input runs whether or not it is iterated (as in Python); `map`
  ///     queues a first window of it and returns at once, and the pool pulls the rest on a
  ///     thread of its own as its queue runs low (a graceful shutdown waits for all of it).
  ///     Called from an actor, an input other than an array or an integer range is pulled on
  ///     that actor instead (a batch at a time, when the pool asks for it), as its iterator may
  ///     hold closures isolated there.
  ///   - timeout: A deadline for the whole iteration. Past it, `next()` throws
  ///     ``ProcessPoolError/Code/timedOut`` and the rest is cancelled (at once, for a zero or
  ///     negative one, at the first result not yet available).
  ///   - taskTimeout: This map's time limit per chunk (overrides the pool's
  ///     ``Configuration/taskTimeout``; with `chunksize` 1 it is per item): a chunk running
  ///     longer fails its items with ``ProcessPoolError/Code/taskTimedOut`` and its worker is
  ///     replaced.
  ///   - progress: Called with a ``ProcessPoolProgress`` each time a chunk finishes (and when a
  ///     lazy input runs out, which makes the total known), on the thread that finished it: keep
  ///     it short. ``ProcessMapSequence/progress`` offers the same
  ///     as an `AsyncStream`.
  ///   - isolation: The caller's actor (left to its default): where an input that may run the
  ///     caller's code is pulled, so that actor must not block waiting for the map (a blocking
  ///     ``shutdownAndWait(cancelFutures:isolation:)`` on it pulls the rest itself).
  /// - Throws: ``ProcessPoolError/Code/invalidArgument`` for a `chunksize` or `buffersize` below 1,
  ///   and the errors of ``submit(_:_:timeout:)`` for the task.
  ///
  /// A failing item throws at its own position; calling `next()` again goes on with the next
  /// item. Ending the iteration early (`break`, or the consuming task being cancelled) cancels
  /// what has not started; with ``Configuration/cancellation`` set to
  /// ``CancellationMode/terminatingWorker`` it also stops the chunks that are running (their
  /// workers are replaced).
  ///
  /// Inlinable so that the per-item work (pulling, encoding and decoding) is compiled for the
  /// concrete types.
  @inlinable
  public func map<T: ProcessTask, Inputs: Sequence>(
    _ task: T, _ inputs: Inputs, chunksize: Int? = nil, buffersize: Int? = nil, timeout: Duration? = nil,
    taskTimeout: Duration? = nil, progress: (@Sendable (ProcessPoolProgress) -> Void)? = nil,
    isolation: (any Actor)? = #isolation
  ) throws -> ProcessMapSequence<T.Output> where Inputs.Element == T.Input {
    try map(
      task, MapCodec(T.self, inputs.makeIterator()), underestimatedCount: inputs.underestimatedCount,
      count: (inputs as? any Collection)?.count, chunksize: chunksize, buffersize: buffersize, timeout: timeout,
      taskTimeout: taskTimeout, progress: progress,
      pullingOn: MapCodec.pullsAnywhere(inputs, T.Input.self) ? nil : isolation)
  }

  @usableFromInline
  func map<T: ProcessTask>(
    _ task: T, _ codec: MapCodec, underestimatedCount: Int, count: Int?, chunksize: Int?, buffersize: Int?,
    timeout: Duration?, taskTimeout: Duration?, progress: (@Sendable (ProcessPoolProgress) -> Void)?,
    pullingOn actor: (any Actor)?
  ) throws -> ProcessMapSequence<T.Output> {
    let (source, counter) = try chunkSource(
      task, codec, underestimatedCount: underestimatedCount, count: count, chunksize: chunksize, buffersize: buffersize,
      taskTimeout: taskTimeout, progress: progress)
    let state = MapState(source: source, buffersize: buffersize, timeout: timeout)
    try state.start(pullingOn: actor)
    return ProcessMapSequence(state: state, progress: counter)
  }

  /// Checks a map's arguments and makes the source of its chunks (shared by `map` and
  /// `mapUnordered`).
  func chunkSource<T: ProcessTask>(
    _ task: T, _ codec: MapCodec, underestimatedCount: Int, count: Int?, chunksize: Int?, buffersize: Int?,
    taskTimeout: Duration?, progress: (@Sendable (ProcessPoolProgress) -> Void)?, unordered: Bool = false
  ) throws -> (ChunkSource, ProgressCounter) {
    if let chunksize, chunksize < 1 {
      throw ProcessPoolError(.invalidArgument, "chunksize must be at least 1 (got \(chunksize))")
    }
    if let buffersize, buffersize < 1 {
      throw ProcessPoolError(.invalidArgument, "buffersize must be nil or at least 1 (got \(buffersize))")
    }
    if let taskTimeout, taskTimeout <= .zero {
      throw ProcessPoolError(.invalidArgument, "taskTimeout must be positive (got \(taskTimeout))")
    }
    let header = try Frame.emptyHeader + Self.typedValueHeader(task)
    let size = chunksize ?? Self.automaticChunksize(count: underestimatedCount, workers: configuration.capacity)
    let counter = ProgressCounter(total: count, handler: progress)
    let source = ChunkSource(
      core: core, header: header, codec: codec, chunksize: size, taskTimeout: taskTimeout ?? configuration.taskTimeout,
      cancellation: configuration.cancellation, progress: counter, arrivals: ChunkArrivals(collects: unordered))
    return (source, counter)
  }

  /// `multiprocessing.Pool.map`'s rule: about four chunks per worker.
  static func automaticChunksize(count: Int, workers: Int) -> Int {
    guard count > 0 else { return 1 }
    let chunks = 4 * max(workers, 1)
    return max(1, (count + chunks - 1) / chunks)
  }

}

/// Pulls inputs and submits them a batch of chunks at a time (`MapBatch`). It holds the pool's
/// core, not the executor: dropping the executor shuts the pool down even while a map's results
/// are unread (what was submitted still finishes; a lazy input's later chunks are refused), as
/// CPython's iterator holds its executor weakly.
final class ChunkSource {
  let core: PoolCore
  /// The start of every chunk's frame: room for the frame header, the task's name and value
  /// (kept once per map: a queued chunk holds only its inputs).
  let header: [UInt8]
  let codec: MapCodec
  let chunksize: Int
  /// The per-task timeout of every item: the map's own, or the pool's.
  let taskTimeout: Duration?
  let progress: ProgressCounter
  /// What ending the iteration early does to running chunks (the pool's setting).
  let cancellation: CancellationMode
  /// The pool's hook that stops a chunk's worker, one for all the map's chunks.
  let stopWorker: StopWorkerHook
  /// How the map's iterator learns that chunks are done.
  let arrivals: ChunkArrivals
  /// Chunks of fewer inputs than this share their batch's buffer (their frame is made when a
  /// worker takes them); bigger ones get a frame of their own as they are pulled, which their
  /// job takes without a copy (the task's header it repeats is small next to their inputs).
  static let sharedChunkInputs = 16
  /// A shared chunk whose inputs take more bytes than this gets a frame of its own all the same.
  static let sharedChunkLimit = 4096
  /// The size of the last frame of its own: the next one reserves it (up to
  /// `sharedChunkLimit`), so a small frame is allocated at about its size.
  @exclusivity(unchecked) var lastFrameSize = 0
  /// Whether ending the iteration early stops running chunks too.
  var terminatesRunningWork: Bool { cancellation == .terminatingWorker }
  // Touched by the map's caller, then by the one iterating task or the feeder: no exclusivity
  // checks.
  @exclusivity(unchecked) var exhausted = false
  @exclusivity(unchecked) var pulled = 0

  init(
    core: PoolCore, header: [UInt8], codec: MapCodec, chunksize: Int, taskTimeout: Duration?,
    cancellation: CancellationMode, progress: ProgressCounter, arrivals: ChunkArrivals
  ) {
    self.core = core
    self.cancellation = cancellation
    self.stopWorker = core.stopWorkerHook
    self.header = header
    self.codec = codec
    self.chunksize = chunksize
    self.taskTimeout = taskTimeout
    self.progress = progress
    self.arrivals = arrivals
  }

  /// Inputs submitted per lock acquisition while a map fills.
  static let submitBatch = 128

  /// The next batch of chunks of a map with `room` chunks of its buffer free (nil: no
  /// `buffersize`); none when there is no room or the input is exhausted. Chunks go to the pool
  /// in batches, one lock and one dispatch pass per batch, of about `submitBatch` inputs, so big
  /// chunks still reach the workers one by one while the next ones are encoded.
  func submitBatch(room: Int?) throws -> MapBatch? {
    let count = room.map { min($0, batchChunks) } ?? batchChunks
    guard count > 0 else { return nil }
    return try submitNext(upTo: count)
  }

  /// Submits up to `limit` chunks at once and returns them (none when the input is exhausted).
  func submitNext(upTo limit: Int) throws -> MapBatch? {
    guard let batch = makeBatch(upTo: limit) else { return nil }
    try core.enqueue(batch)
    return batch
  }

  /// How many chunks make one batch (about `submitBatch` inputs).
  var batchChunks: Int { max(1, Self.submitBatch / chunksize) }

  /// Pulls and encodes up to `limit` chunks (not queued); nil when the input is exhausted. An
  /// input that cannot be encoded stays out of its chunk and fails at its position.
  func makeBatch(upTo limit: Int) -> MapBatch? {
    let start = pulled
    let messageLimit = core.configuration.messageLimit
    // What a chunk's `[u32 count](block)*` may take for its frame to fit in one message.
    let chunkLimit = messageLimit > header.count ? messageLimit - header.count : 0
    // Small chunks share one buffer (one writer for the batch); a chunk of many inputs is
    // written straight into a frame of its own, which its job takes without a copy.
    let shared = chunksize < Self.sharedChunkInputs
    let writer = ByteWriter([])
    var ends: [Int] = []
    var frames: [Int: [UInt8]] = [:]
    var failures: [Int: [Int: ProcessPoolError]] = [:]
    var lastCount = chunksize
    while ends.count < limit, !exhausted {
      let chunk = ends.count
      var from = writer.bytes.count
      if !shared {
        writer.bytes = []
        writer.bytes.reserveCapacity(max(min(lastFrameSize, Self.sharedChunkLimit), header.count + 4))
        writer.bytes += header
        from = writer.bytes.count
      }
      writer.bytes.appendLittleEndian(UInt32(0))
      // The chunk's inputs share one frame: an input that would take it past the limit fails at
      // its own position (with `valueTooLarge`) and is left out.
      let (end, overflow) = from.addingReportingOverflow(chunkLimit)
      writer.byteLimit = overflow ? Int.max : end
      let (count, failed) = codec.pull(chunksize, writer)
      pulled += count
      if count < chunksize {
        exhausted = true
        // A lazy input's size is known now; a collection's was known from the start.
        if progress.snapshot.total == nil { progress.setTotal(pulled) }
      }
      guard count > 0 else {
        writer.bytes.removeSubrange(from...)
        break
      }
      lastCount = count
      if !failed.isEmpty {
        progress.record(completed: 0, failed: failed.count)
        failures[chunk] = failed
      }
      writer.bytes.withUnsafeMutableBytes {
        $0.storeBytes(of: UInt32(count - failed.count).littleEndian, toByteOffset: from, as: UInt32.self)
      }
      if !shared {
        lastFrameSize = writer.bytes.count
        frames[chunk] = writer.bytes
        writer.bytes = []
      } else if writer.bytes.count - from > Self.sharedChunkLimit {
        // One big input: its frame is its own (copied once here rather than at dispatch).
        frames[chunk] = header + writer.bytes[from...]
        writer.bytes.removeSubrange(from...)
      }
      ends.append(writer.bytes.count)
    }
    let inputs = writer.bytes
    guard !ends.isEmpty else { return nil }
    return MapBatch(
      source: self, start: start, inputs: consume inputs, ends: ends, frames: frames, lastCount: lastCount,
      failures: failures)
  }
}
