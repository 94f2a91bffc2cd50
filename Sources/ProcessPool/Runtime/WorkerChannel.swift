import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// The runtime's side of one worker: its descriptors (socket, pidfd, stderr pipe), its reply
/// ring, and the bytes waiting to be written to it. `PoolState` keeps only facts about the
/// worker and asks for frames to be written, signals to be sent and the channel to be closed;
/// `PoolCore` does that here, keyed by the same worker id.
///
/// Closed exactly once, explicitly, when the worker was reaped (`close`): never by whichever
/// thread happens to drop it last. The lock makes every use of a descriptor by a thread other
/// than the I/O thread (a signal, a write) either happen before the close or see it closed, so
/// a descriptor number is never used after it was closed (and perhaps reused by someone else).
final class WorkerChannel: Sendable {
  let worker: Int
  /// The local process: the worker, or its launcher (`ssh`, …).
  let pid: Int32
  /// Started by a launcher command: signals go to its process group.
  let launched: Bool
  /// The parent's end of its socket (non-blocking).
  let socket: Int32
  /// Where a local worker's replies come (nil for a launched worker: all on the socket).
  let ring: ReplyRing?
  /// Readable once the process has exited (nil where the kernel has no pidfds).
  let pidfd: Int32?
  /// Its stderr as the I/O thread reads it (nil when inherited); only that thread uses it.
  nonisolated(unsafe) let errorStream: WorkerErrorStream?
  private let poller: EventPoller
  private let output = Mutex<Output>(Output())

  /// The bytes not yet written, from `offset` on, and who writes them: a thread that set
  /// `flushing` writes with the lock released; `wantsWrite` hands the job to the I/O thread
  /// once the socket has room.
  private struct Output {
    var bytes: [UInt8] = []
    var offset = 0
    var flushing = false
    var wantsWrite = false
    var closed = false
    /// The socket is still to be closed: a writer held it when the channel was closed.
    var socketOpen = true
    /// Frames queued whose shared value is still being copied (`append(_:holding:)`): nothing
    /// is written until they are released, so no frame overtakes another.
    var held = 0
  }

  /// Takes over the descriptors of `spawned` and watches them in `poller` (keyed by `worker`).
  /// On failure every descriptor is closed (the process is the caller's to stop).
  init(
    worker: Int, _ spawned: SpawnedWorker, launched: Bool, forwardStandardError: Bool, poller: EventPoller
  ) throws(Errno) {
    self.worker = worker
    pid = spawned.pid
    self.launched = launched
    socket = spawned.socket
    ring = spawned.ring
    pidfd = spawned.pidfd
    errorStream = spawned.standardError.map {
      WorkerErrorStream(worker: worker, pid: spawned.pid, fd: $0, forward: forwardStandardError)
    }
    self.poller = poller
    do {
      try poller.add(socket, .socket, worker: worker)
      if let pidfd { try poller.add(pidfd, .process, worker: worker) }
      if let errorStream { try poller.add(errorStream.fd, .standardError, worker: worker) }
    } catch {
      closeDescriptors(socket: true)
      throw error
    }
    // Replies are announced by a `wake` frame until the I/O thread finds the worker busy.
    ring?.setParentSleeping(true)
  }

  /// Appends frames (`bytes`, one or more whole frames) to what is to be written; true when the
  /// caller took the writer role and must `flush`. Nothing is queued on a closed channel. With
  /// `holding`, nothing is written from here on until `releaseHold` (the frame points at a
  /// shared value the caller has yet to copy).
  func append(_ bytes: [UInt8], holding: Bool = false) -> Bool {
    output.withLock { output in
      // Counted even on a closed channel: every hold is released once.
      if holding { output.held += 1 }
      if output.closed { return false }
      if output.bytes.count == output.offset {
        // Into an empty buffer the frame is shared, not copied.
        output.bytes = bytes
        output.offset = 0
      } else {
        output.bytes.append(contentsOf: bytes)
      }
      if output.flushing || output.wantsWrite || output.held > 0 { return false }
      output.flushing = true
      return true
    }
  }

  /// Ends a hold of `append(_:holding:)`; true when the caller took the writer role and must
  /// `flush` (the writes waited for the hold, and nobody else is writing).
  func releaseHold() -> Bool {
    output.withLock { output in
      output.held -= 1
      guard output.held == 0, !output.closed, !output.flushing, !output.wantsWrite,
        output.bytes.count > output.offset
      else { return false }
      output.flushing = true
      return true
    }
  }

  /// Writes the pending bytes; the caller holds the writer role (`append` returned true). Stops
  /// at a full socket and hands the rest to the I/O thread, so no caller ever blocks on a worker.
  func flush() {
    while true {
      let claim = output.withLock { output -> (bytes: [UInt8], offset: Int)? in
        if output.closed || output.bytes.count == output.offset {
          output.bytes = []
          output.offset = 0
          releaseWriterRole(&output)
          return nil
        }
        // A frame waits for its shared value: whoever releases the hold writes.
        if output.held > 0 {
          releaseWriterRole(&output)
          return nil
        }
        defer {
          output.bytes = []
          output.offset = 0
        }
        return (output.bytes, output.offset)
      }
      guard let (bytes, offset) = claim else { return }
      var sent = offset
      var blocked = false
      bytes.withUnsafeBytes { raw in
        while sent < raw.count {
          do {
            sent += try Syscall.send(socket, raw.baseAddress! + sent, raw.count - sent, nonBlocking: true)
          } catch let error as Errno where error.code == EAGAIN || error.code == EWOULDBLOCK {
            blocked = true
            return
          } catch {
            // The worker is gone; the I/O thread sees its end and handles the work.
            sent = raw.count
          }
        }
      }
      if blocked {
        output.withLock { output in
          // What was not sent goes back in front of anything queued since.
          let newer = output.bytes[output.offset...]
          output.bytes = bytes
          output.offset = sent
          output.bytes.append(contentsOf: newer)
          releaseWriterRole(&output)
          guard !output.closed else { return }
          output.wantsWrite = true
          poller.modify(socket, .socket, worker: worker, events: EventPoller.readable | EventPoller.writable)
        }
        return
      }
    }
  }

  private func releaseWriterRole(_ output: inout Output) {
    output.flushing = false
    if output.closed && output.socketOpen {
      output.socketOpen = false
      Syscall.close(socket)
    }
  }

  /// The socket has room again (the I/O thread saw it writable): writes what waited for that.
  func resumeWriting() {
    let claimed = output.withLock { output -> Bool in
      guard output.wantsWrite, !output.flushing, !output.closed else { return false }
      output.wantsWrite = false
      output.flushing = true
      poller.modify(socket, .socket, worker: worker, events: EventPoller.readable)
      return true
    }
    if claimed { flush() }
  }

  /// Sends `signal` to the worker: a local worker through its pidfd (which stays its process's
  /// even once reaped), else `target` (a launcher's process group). Nothing once closed: the
  /// worker was reaped.
  func signal(_ signal: Int32, target: Int32) {
    output.withLock { output in
      guard !output.closed else { return }
      if !launched, let pidfd {
        Syscall.signal(pidfd: pidfd, signal)
      } else {
        Syscall.kill(target, signal)
      }
    }
  }

  /// Bytes queued and not written yet (tests look).
  var queuedBytes: Int { output.withLock { $0.bytes.count - $0.offset } }

  /// Closes every descriptor and unmaps the ring, once: the worker was reaped, its stderr read to
  /// the end and its ring read by the I/O thread (which reads it no more). Bytes not written are
  /// dropped; a writer still sending closes the socket when it lets go of it.
  func close() {
    output.withLock { output in
      precondition(!output.closed, "worker \(worker)'s channel closed twice")
      output.closed = true
      output.bytes = []
      output.offset = 0
      output.wantsWrite = false
      closeDescriptors(socket: !output.flushing)
      if !output.flushing { output.socketOpen = false }
      ring?.unmap()
    }
  }

  private func closeDescriptors(socket closingSocket: Bool) {
    poller.remove(socket)
    if closingSocket { Syscall.close(socket) }
    if let pidfd {
      poller.remove(pidfd)
      Syscall.close(pidfd)
    }
    if let errorStream {
      poller.remove(errorStream.fd)
      Syscall.close(errorStream.fd)
    }
  }
}
