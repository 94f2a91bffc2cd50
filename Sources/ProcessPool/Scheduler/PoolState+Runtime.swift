/// The hand-overs between the state and the runtime (the I/O thread and the threads that write).
/// The writer role of a worker's socket: one thread at a time writes a worker's pending bytes
/// (`WorkerSlot.out`), with the pool's lock released; these transitions hand the role and the
/// bytes over.
extension PoolState {
  /// The bytes the writer must send to `id` now, from the offset given, with the socket; nil when
  /// nothing is left (the writer role is given back) or the worker is gone.
  mutating func takeOutgoing(worker id: Int) -> (socket: Socket, bytes: [UInt8], offset: Int)? {
    guard let index = index(ofWorker: id) else { return nil }
    if workers[index].out.count == workers[index].outOffset || workers[index].phase == .exited {
      workers[index].out = []
      workers[index].outOffset = 0
      workers[index].flushing = false
      return nil
    }
    let bytes = workers[index].out
    let offset = workers[index].outOffset
    workers[index].out = []
    workers[index].outOffset = 0
    return (workers[index].socket, bytes, offset)
  }

  /// The socket of `id` is full: what was not sent goes back in front of anything queued since,
  /// and the I/O thread takes over the writing once the socket has room.
  mutating func socketFull(worker id: Int, unsent bytes: [UInt8], from offset: Int) {
    guard let index = index(ofWorker: id) else { return }
    let newer = workers[index].out
    workers[index].out = bytes
    workers[index].outOffset = offset
    if !newer.isEmpty { workers[index].out.append(contentsOf: newer) }
    workers[index].flushing = false
    workers[index].wantsWrite = true
  }

  /// The socket of `id` has room again: true when the I/O thread now holds the writer role.
  mutating func claimWriting(worker id: Int) -> Bool {
    guard let index = index(ofWorker: id), workers[index].wantsWrite, !workers[index].flushing else { return false }
    workers[index].wantsWrite = false
    workers[index].flushing = true
    return true
  }
}

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
