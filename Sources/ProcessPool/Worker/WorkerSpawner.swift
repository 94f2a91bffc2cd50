import CProcessPoolShims

#if canImport(Glibc)
  import Glibc
#endif

/// A process `WorkerSpawner` started, with the parent's ends of what connects it.
struct SpawnedWorker: Sendable {
  let pid: Int32
  /// The parent's end of its socket (non-blocking, close-on-exec).
  let socket: Socket
  /// Where a local worker's replies come.
  let ring: ReplyRing?
  /// Readable once the process exits (nil where the kernel has no pidfds).
  let pidfd: Socket?
}

/// Why a worker could not be started.
struct SpawnFailure: Error {
  let error: ProcessPoolError
  /// The system is out of descriptors, processes or memory (EMFILE, ENFILE, EAGAIN, ENOMEM):
  /// worth trying again later, not the launcher's fault.
  let exhausted: Bool

  init(_ message: String, _ cause: Errno) {
    error = ProcessPoolError(.workerStartFailed, "\(message): \(cause)")
    exhausted = [EMFILE, ENFILE, EAGAIN, ENOMEM].contains(cause.code)
  }

  init(_ error: ProcessPoolError) {
    self.error = error
    exhausted = false
  }
}

/// Starts a worker: this executable again, with the marker in its environment and its end of a
/// socket pair as fd 3, or a launcher command with that end as its stdin and stdout, through
/// `posix_spawn` (never `fork`: a forked Swift process with threads is not safe).
enum WorkerSpawner {
  static let bootstrapAdvice =
    "add `ProcessPoolWorker.bootstrap()` as the first line of `main` (needed in a build linked with --static-swift-stdlib)"

  /// Starts a worker of `launcher`.
  static func spawn(_ launcher: WorkerLauncher) throws(SpawnFailure) -> SpawnedWorker {
    if pp_started_as_worker() != 0 && !WorkerLoop.isActive.load(ordering: .acquiring) {
      throw SpawnFailure(
        ProcessPoolError(
          .workerStartFailed,
          "this process was started as a pool worker but its worker loop never ran, so it may not start workers "
            + "itself; " + bootstrapAdvice))
    }
    let ends: (Int32, Int32)
    do {
      ends = try Syscall.socketPair()
    } catch {
      throw SpawnFailure("cannot create the worker's socket", error)
    }
    let parentEnd = Socket(ends.0)
    defer { Syscall.close(ends.1) }
    do {
      try Syscall.setNonBlocking(parentEnd.fd)
    } catch {
      throw SpawnFailure("cannot configure the worker's socket", error)
    }
    // Both ends: a large payload crosses in fewer rounds of wake-ups in either direction.
    Syscall.setSocketBuffers(parentEnd.fd, bytes: 1 << 20)
    Syscall.setSocketBuffers(ends.1, bytes: 1 << 20)
    let command = launcher.arguments
    // A launched worker may run on another host: only a local one shares memory with us.
    var ring: (ring: ReplyRing, fd: Int32)?
    if command == nil {
      do {
        ring = try ReplyRing.create()
      } catch {
        throw SpawnFailure("cannot create the worker's reply ring", error)
      }
    }
    defer { if let ring { Syscall.close(ring.fd) } }

    var environment: [UnsafeMutablePointer<CChar>?] = []
    if let base = pp_environ() {
      var index = 0
      while let entry = base[index] {
        environment.append(entry)
        index += 1
      }
    }
    let marker = strdup(command == nil ? PP_WORKER_ENV + "=3,4" : WorkerLauncher.environmentMarker)
    let arguments = (command ?? [CommandLine.arguments.first ?? "processpool-worker"]).map { strdup($0) } + [nil]
    defer {
      free(marker)
      for argument in arguments { free(argument) }
    }
    environment.append(marker)
    environment.append(nil)
    let program = command?[0] ?? selfExecutable

    var pid: pid_t = 0
    let rc = arguments.withUnsafeBufferPointer { argv in
      environment.withUnsafeBufferPointer { envp in
        pp_spawn_worker(
          &pid, program, argv.baseAddress, envp.baseAddress, ends.1, ring?.fd ?? -1, command == nil ? 0 : 1)
      }
    }
    guard rc == 0 else {
      throw SpawnFailure("cannot start \(program)", Errno(code: rc, call: "posix_spawn"))
    }
    // Without a pidfd (an old kernel, or no descriptor left) the end of the socket says when
    // the worker is gone, as before.
    let pidfd = try? Syscall.pidfdOpen(pid)
    return SpawnedWorker(pid: pid, socket: parentEnd, ring: ring?.ring, pidfd: pidfd.map(Socket.init))
  }

  /// `/proc/self/exe` resolves in the spawning process, so a rebuilt or moved binary still
  /// starts the code that is running.
  static let selfExecutable = "/proc/self/exe"
}
