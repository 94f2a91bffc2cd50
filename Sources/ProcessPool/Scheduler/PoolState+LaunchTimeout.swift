/// A launched worker that never says hello: its launcher buffers the worker's output (`srun`
/// without `-u`), its job waits in a queue, its host does not answer. Without a limit the pool
/// would wait for it for ever.
extension PoolState {
  /// Past `Configuration.launchTimeout` without a hello: the worker's process group is stopped
  /// (SIGTERM, SIGKILL after the grace period) and it counts as a failed start of its launcher,
  /// with advice on what to check. Its exit is then a stop by the pool, not a second failure.
  mutating func launchTimedOut(workerAt index: Int, _ effects: inout PoolEffects) {
    guard case .starting = workers[index].phase, let timeout = configuration.launchTimeout else { return }
    let launcher = workers[index].launcher
    let message = launchers[launcher].launchTimeoutMessage(after: timeout)
    let pid = workers[index].pid
    workers[index].phase = .terminating(
      reason: ProcessPoolError(.workerStartFailed, message, workerPID: pid),
      killAt: now.advanced(by: configuration.terminationGracePeriod))
    effects.signals.append(workers[index].signalling(SignalNumber.terminate))
    effects.wakeIO = true
    startFailed(
      launcher: launcher,
      ProcessPoolError(
        .brokenPool,
        "\(launcherStartFailures[launcher] + 1) workers (\(launchers[launcher])) in a row did not start: \(message)",
        workerPID: pid), &effects)
  }
}
