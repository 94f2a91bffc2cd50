/// Cancelling a scoped pool's work (`withProcessPool` in a cancelled task).
extension PoolState {
  /// Fails the work every worker holds with `reason` now, before the workers are stopped (their
  /// exit would otherwise report a forced shutdown). The futures keep this first outcome.
  mutating func failRunningWork(_ reason: ProcessPoolError, _ effects: inout PoolEffects) {
    for index in workers.indices where workers[index].phase != .exited {
      for job in workers[index].inflight {
        var error = reason
        error.workerPID = workers[index].pid
        effects.failures.append((job.sink, error))
      }
    }
  }
}
