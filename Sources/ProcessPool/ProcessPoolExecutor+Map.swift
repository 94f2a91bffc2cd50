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
  ///   - buffersize: At most this many chunks in flight; the input is then pulled lazily, so an
  ///     infinite or huge sequence runs in bounded memory. Default: the whole input is
  ///     submitted at once (as Python does).
  ///   - timeout: A deadline for the whole iteration. Past it, `next()` throws
  ///     ``ProcessPoolError/Code/timedOut`` and the rest is cancelled (at once, for a zero or
  ///     negative one, at the first result not yet available).
  ///   - progress: Called with a ``ProcessPoolProgress`` each time a chunk finishes (and when a
  ///     lazy input runs out, which makes the total known), on the thread that finished it: keep
  ///     it short. ``ProcessMapSequence/progress`` offers the same
  ///     as an `AsyncStream`.
  /// - Throws: ``ProcessPoolError/Code/invalidArgument`` for a `chunksize` or `buffersize` below 1,
  ///   and the errors of ``submit(_:_:timeout:)`` for the task.
  ///
  /// A failing item throws at its own position; calling `next()` again goes on with the next
  /// item. Ending the iteration early (`break`, or the consuming task being cancelled) cancels
  /// what has not started.
  ///
  /// Inlinable so that the per-item work (pulling, encoding and decoding) is compiled for the
  /// concrete types.
  @inlinable
  public func map<T: ProcessTask, Inputs: Sequence>(
    _ task: T, _ inputs: Inputs, chunksize: Int? = nil, buffersize: Int? = nil, timeout: Duration? = nil,
    progress: (@Sendable (ProcessPoolProgress) -> Void)? = nil
  ) throws -> ProcessMapSequence<T.Output> where Inputs.Element == T.Input {
    try map(
      task, MapCodec(T.self, inputs.makeIterator()), underestimatedCount: inputs.underestimatedCount,
      count: (inputs as? any Collection)?.count, chunksize: chunksize, buffersize: buffersize, timeout: timeout,
      progress: progress)
  }

  @usableFromInline
  func map<T: ProcessTask>(
    _ task: T, _ codec: MapCodec, underestimatedCount: Int, count: Int?, chunksize: Int?, buffersize: Int?,
    timeout: Duration?, progress: (@Sendable (ProcessPoolProgress) -> Void)?
  ) throws -> ProcessMapSequence<T.Output> {
    if let chunksize, chunksize < 1 {
      throw ProcessPoolError(.invalidArgument, "chunksize must be at least 1 (got \(chunksize))")
    }
    if let buffersize, buffersize < 1 {
      throw ProcessPoolError(.invalidArgument, "buffersize must be None or > 0 (got \(buffersize))")
    }
    let header = try Frame.emptyHeader + Self.typedValueHeader(task)
    let size = chunksize ?? Self.automaticChunksize(count: underestimatedCount, workers: configuration.capacity)
    let counter = ProgressCounter(total: count, handler: progress)
    let source = ChunkSource(pool: self, header: header, codec: codec, chunksize: size, progress: counter)
    let state = MapState(source: source, buffersize: buffersize, timeout: timeout)
    try state.fill()
    return ProcessMapSequence(state: state, progress: counter)
  }

  /// `multiprocessing.Pool.map`'s rule: about four chunks per worker.
  static func automaticChunksize(count: Int, workers: Int) -> Int {
    guard count > 0 else { return 1 }
    let chunks = 4 * max(workers, 1)
    return max(1, (count + chunks - 1) / chunks)
  }

}

/// Pulls inputs and submits them a chunk at a time.
final class ChunkSource {
  let pool: ProcessPoolExecutor
  /// The start of every chunk's frame: room for the frame header, the task's name and value.
  let header: [UInt8]
  let codec: MapCodec
  let chunksize: Int
  let progress: ProgressCounter
  // Touched by the map's caller, then by the one iterating task: no exclusivity checks.
  @exclusivity(unchecked) var exhausted = false
  @exclusivity(unchecked) var pulled = 0

  init(pool: ProcessPoolExecutor, header: [UInt8], codec: MapCodec, chunksize: Int, progress: ProgressCounter) {
    self.pool = pool
    self.header = header
    self.codec = codec
    self.chunksize = chunksize
    self.progress = progress
  }

  /// Submits up to `limit` chunks at once and returns them (none when the input is exhausted).
  func submitNext(upTo limit: Int) throws -> [MapChunk] {
    var chunks: [MapChunk] = []
    var jobs: [Job] = []
    while chunks.count < limit, !exhausted {
      let (chunk, job) = makeChunk()
      if let chunk { chunks.append(chunk) }
      if let job { jobs.append(job) }
    }
    try pool.enqueue(jobs)
    return chunks
  }

  /// Pulls and encodes one chunk: one job and one future for the inputs that encode (an input
  /// that cannot be encoded stays out of the job and fails at its position; no job when none is
  /// left, no chunk when the input is exhausted).
  private func makeChunk() -> (MapChunk?, Job?) {
    var payload = header
    let countOffset = payload.count
    payload.appendLittleEndian(UInt32(0))
    // The chunk's inputs share one frame: an input that would take it past the limit fails at
    // its own position (with `valueTooLarge`) and is left out.
    let (count, failures) = payload.withByteWriter { writer in
      writer.byteLimit = Frame.sendLimit.load(ordering: .relaxed)
      return codec.pull(chunksize, writer)
    }
    pulled += count
    if count < chunksize {
      exhausted = true
      // A lazy input's size is known now; a collection's was known from the start.
      if progress.snapshot.total == nil { progress.setTotal(pulled) }
    }
    guard count > 0 else { return (nil, nil) }
    if !failures.isEmpty { progress.record(completed: 0, failed: failures.count) }
    let sent = count - failures.count
    guard sent > 0 else {
      return (MapChunk(future: nil, count: count, encodingFailures: failures), nil)
    }
    payload.withUnsafeMutableBytes {
      $0.storeBytes(of: UInt32(sent).littleEndian, toByteOffset: countOffset, as: UInt32.self)
    }
    let progress = self.progress
    let future = ProcessFuture<RawOutcomes>(
      acknowledgesCancel: true, stopWorker: pool.core.stopWorkerHook, onFinish: { progress.record($0, count: sent) })
    let chunk = MapChunk(future: future, count: count, encodingFailures: failures)
    let sink = MapChunkSink(future: future, count: sent)
    return (chunk, Job(frame: consume payload, sink: sink, timeout: pool.configuration.taskTimeout))
  }
}
