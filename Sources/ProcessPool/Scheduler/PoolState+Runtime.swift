/// The hand-overs between the state and the I/O thread for spawning and reaping.
extension PoolState {
  /// Spawns for the I/O thread to make (already counted in `spawning`).
  mutating func queueSpawns(_ launchers: [Int]) { pendingSpawns += launchers }

  /// The spawns queued so far, for the I/O thread to make now.
  mutating func takePendingSpawns() -> [Int] {
    defer { pendingSpawns = [] }
    return pendingSpawns
  }

  /// The worker's process is gone or its socket ended: no signal may reach it any more, and it
  /// is about to be reaped. Returns the phase it had.
  mutating func workerEnded(worker id: Int) -> WorkerSlot.Phase? {
    guard let index = index(ofWorker: id) else { return nil }
    defer { workers[index].phase = .exited }
    return workers[index].phase
  }
}
