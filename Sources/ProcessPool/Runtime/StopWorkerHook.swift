/// What a future (or a map's chunk) calls to stop the worker running it; weak, so futures do not
/// keep the pool. An object rather than a closure: a future holds it in one word, not two, and a
/// map's chunks share one.
final class StopWorkerHook: Sendable {
  private weak let core: PoolCore?

  init(core: PoolCore) {
    self.core = core
  }

  /// Returns nil when the future's job (a map batch's chunk `chunk`) is not the one its worker
  /// runs (it is left alone), else what fails the job once the caller has cancelled its own.
  func stopWorker(running future: ObjectIdentifier, chunk: Int = 0) -> (@Sendable () -> Void)? {
    guard let core, core.belongsToThisProcess else { return nil }
    let job = core.transition { state, effects in
      state.stopWorker(running: future, chunk: chunk, now: .now, &effects)
    }
    guard let job else { return nil }
    return {
      job.sink.fail(ProcessPoolError(.cancelled, "the task was cancelled while running; its worker was stopped"))
    }
  }
}
