extension ProcessPoolExecutor {
  /// Runs `task` over every input and yields each output **as soon as it is ready**, paired
  /// with its input's position: Python's `Pool.imap_unordered`.
  ///
  /// ```swift
  /// for try await (index, image) in try pool.mapUnordered(Render(), frames) {
  ///     save(image, as: "frame-\(index).png")
  /// }
  /// ```
  ///
  /// A separate method rather than a flag on ``map(_:_:chunksize:buffersize:timeout:taskTimeout:progress:isolation:)``
  /// because its elements differ: `(index, output)` instead of the output alone.
  ///
  /// The rules are `map`'s: the same `chunksize` (a chunk's items are yielded together, in input
  /// order, when the whole chunk is done), `buffersize` (at most this many chunks submitted and
  /// not yet yielded), `timeout` (for the whole iteration) and `progress`. A failing item throws
  /// its own error at its turn and `next()` may be called again for the rest;
  /// ``ProcessUnorderedMapSequence/Iterator/lastIndex`` tells which input it was. Ending the
  /// iteration early cancels what has not started.
  ///
  /// - Parameters:
  ///   - task: The task to run; it is encoded once and sent with every chunk.
  ///   - inputs: Any sequence of inputs, finite or not.
  ///   - chunksize: Inputs sent per message (as for `map`).
  ///   - buffersize: At most this many chunks in flight, pulled as the iteration consumes them.
  ///     Default: all of the input runs, pulled by the pool as its queue runs low (as for `map`).
  ///   - timeout: A deadline for the whole iteration; past it, `next()` throws
  ///     ``ProcessPoolError/Code/timedOut`` and the rest is cancelled.
  ///   - taskTimeout: This map's per-task time limit (overrides the pool's
  ///     ``Configuration/taskTimeout``), as for `map`.
  ///   - progress: Called with a ``ProcessPoolProgress`` each time a chunk finishes.
  ///   - isolation: The caller's actor (left to its default), as for `map`.
  /// - Throws: ``ProcessPoolError/Code/invalidArgument`` for a `chunksize` or `buffersize` below 1,
  ///   and the errors of ``submit(_:_:timeout:)`` for the task.
  @inlinable
  public func mapUnordered<T: ProcessTask, Inputs: Sequence>(
    _ task: T, _ inputs: Inputs, chunksize: Int? = nil, buffersize: Int? = nil, timeout: Duration? = nil,
    taskTimeout: Duration? = nil, progress: (@Sendable (ProcessPoolProgress) -> Void)? = nil,
    isolation: (any Actor)? = #isolation
  ) throws -> ProcessUnorderedMapSequence<T.Output> where Inputs.Element == T.Input {
    try mapUnordered(
      task, MapCodec(T.self, inputs.makeIterator()), underestimatedCount: inputs.underestimatedCount,
      count: (inputs as? any Collection)?.count, chunksize: chunksize, buffersize: buffersize, timeout: timeout,
      taskTimeout: taskTimeout, progress: progress,
      pullingOn: MapCodec.pullsAnywhere(inputs, T.Input.self) ? nil : isolation)
  }

  @usableFromInline
  func mapUnordered<T: ProcessTask>(
    _ task: T, _ codec: MapCodec, underestimatedCount: Int, count: Int?, chunksize: Int?, buffersize: Int?,
    timeout: Duration?, taskTimeout: Duration?, progress: (@Sendable (ProcessPoolProgress) -> Void)?,
    pullingOn actor: (any Actor)?
  ) throws -> ProcessUnorderedMapSequence<T.Output> {
    let (source, counter) = try chunkSource(
      task, codec, underestimatedCount: underestimatedCount, count: count, chunksize: chunksize, buffersize: buffersize,
      taskTimeout: taskTimeout, progress: progress, unordered: true)
    let state = UnorderedMapState(source: source, buffersize: buffersize, timeout: timeout)
    try state.start(pullingOn: actor)
    return ProcessUnorderedMapSequence(state: state, progress: counter)
  }
}
