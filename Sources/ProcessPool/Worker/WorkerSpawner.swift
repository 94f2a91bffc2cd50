import CProcessPoolShims

#if canImport(Glibc)
  import Glibc
#endif

/// Starts a worker: this executable again, with the marker in its environment and its end of a
/// socket pair as fd 3, or a launcher command with that end as its stdin and stdout, through
/// `posix_spawn` (never `fork`: a forked Swift process with threads is not safe).
enum WorkerSpawner {
  static let bootstrapAdvice =
    "add `ProcessPoolWorker.bootstrap()` as the first line of `main` (needed in a build linked with --static-swift-stdlib)"

  /// Returns the child's pid, the parent's end of its socket (non-blocking, close-on-exec),
  /// for a local worker the ring its replies come through, and the read end of its stderr
  /// unless that is `inherit`ed.
  static func spawn(
    _ launcher: WorkerLauncher, standardError: ProcessPoolExecutor.WorkerStandardError, backtraces: Bool
  ) throws(ProcessPoolError) -> (pid: Int32, socket: Socket, ring: ReplyRing?, standardError: Socket?) {
    if pp_started_as_worker() != 0 && !WorkerLoop.isActive.load(ordering: .acquiring) {
      throw ProcessPoolError(
        .workerStartFailed,
        "this process was started as a pool worker but its worker loop never ran, so it may not start workers itself; "
          + bootstrapAdvice)
    }
    let ends: (Int32, Int32)
    do {
      ends = try Syscall.socketPair()
    } catch {
      throw ProcessPoolError(.workerStartFailed, "cannot create the worker's socket: \(error)")
    }
    let parentEnd = Socket(ends.0)
    defer { Syscall.close(ends.1) }
    do {
      try Syscall.setNonBlocking(parentEnd.fd)
    } catch {
      throw ProcessPoolError(.workerStartFailed, "cannot configure the worker's socket: \(error)")
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
        throw ProcessPoolError(.workerStartFailed, "cannot create the worker's reply ring: \(error)")
      }
    }
    defer { if let ring { Syscall.close(ring.fd) } }
    var errorPipe: (read: Socket, write: Int32)?
    if standardError != .inherit {
      do {
        let ends = try Syscall.outputPipe()
        errorPipe = (Socket(ends.read), ends.write)
      } catch {
        throw ProcessPoolError(.workerStartFailed, "cannot create the worker's stderr pipe: \(error)")
      }
    }
    defer { if let errorPipe { Syscall.close(errorPipe.write) } }

    var environment: [UnsafeMutablePointer<CChar>?] = []
    var backtraceSet = false
    if let base = pp_environ() {
      var index = 0
      while let entry = base[index] {
        environment.append(entry)
        if strncmp(entry, "SWIFT_BACKTRACE=", 16) == 0 { backtraceSet = true }
        index += 1
      }
    }
    let marker = strdup(command == nil ? PP_WORKER_ENV + "=3,4" : WorkerLauncher.environmentMarker)
    // The runtime's backtracer makes a crash about ten times slower and prints some 70 lines;
    // the message of a fatalError is printed without it. The user's own setting wins.
    let noBacktrace = command == nil && !backtraceSet && !backtraces ? strdup(Self.backtracerOff) : nil
    let arguments = (command ?? [CommandLine.arguments.first ?? "processpool-worker"]).map { strdup($0) } + [nil]
    defer {
      free(marker)
      free(noBacktrace)
      for argument in arguments { free(argument) }
    }
    environment.append(marker)
    if let noBacktrace { environment.append(noBacktrace) }
    environment.append(nil)
    let program = command?[0] ?? selfExecutable

    var pid: pid_t = 0
    let rc = arguments.withUnsafeBufferPointer { argv in
      environment.withUnsafeBufferPointer { envp in
        pp_spawn_worker(
          &pid, program, argv.baseAddress, envp.baseAddress, ends.1, ring?.fd ?? -1, command == nil ? 0 : 1,
          errorPipe?.write ?? -1)
      }
    }
    guard rc == 0 else {
      throw ProcessPoolError(
        .workerStartFailed, "cannot start \(program): \(Errno(code: rc, call: "posix_spawn"))")
    }
    return (pid, parentEnd, ring?.ring, errorPipe?.read)
  }

  /// What a local worker's environment gets unless the user set `SWIFT_BACKTRACE` or asked for
  /// backtraces.
  static let backtracerOff = "SWIFT_BACKTRACE=enable=no"

  /// `/proc/self/exe` resolves in the spawning process, so a rebuilt or moved binary still
  /// starts the code that is running.
  static let selfExecutable = "/proc/self/exe"
}
