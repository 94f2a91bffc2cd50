import CProcessPoolShims

#if canImport(Glibc)
  import Glibc
#endif

/// A process `WorkerSpawner` started, with the parent's ends of what connects it: descriptors
/// the caller now owns (a `WorkerChannel` takes them over and closes them).
struct SpawnedWorker: Sendable {
  let pid: Int32
  /// The parent's end of its socket (non-blocking, close-on-exec).
  let socket: Int32
  /// Where a local worker's replies come.
  let ring: ReplyRing?
  /// Readable once the process exits (nil where the kernel has no pidfds).
  let pidfd: Int32?
  /// The read end of its stderr (nil when inherited).
  let standardError: Int32?
}

/// A local worker asked of the fork server, before its answer: the parent's ends, held until
/// then (`WorkerSpawner.finish`).
struct PendingWorker: Sendable {
  let request: ForkServer.Request
  /// The parent's end of its socket (non-blocking, close-on-exec), its token written.
  let socket: Int32
  let ring: ReplyRing?
  /// The read end of its stderr (nil when inherited).
  let standardError: Int32?
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
/// `posix_spawn`, or, for a local worker, forked by the `ForkServer` (never forked here: a forked
/// Swift process with threads is not safe; the server has none).
enum WorkerSpawner {
  /// What to do when a worker of this executable cannot enter its loop before `main`.
  static let bootstrapAdvice =
    "this executable cannot run its workers before `main` (a --static-swift-stdlib build linked without "
    + "`__init_array_start`); link it with the system linker (ld, gold or lld), or without --static-swift-stdlib"

  /// Refuses, before anything is spawned, a pool with local workers in an executable whose
  /// workers could not enter their loop before `main` (they would run the program instead).
  static func checkLocalWorkersCanStart(_ configuration: ProcessPoolExecutor.Configuration) throws(ProcessPoolError) {
    guard configuration.effectiveLaunchers.contains(where: { $0.arguments == nil }) else { return }
    guard localEntryAvailable else { throw ProcessPoolError(.workerStartFailed, bootstrapAdvice) }
  }

  static let localEntryAvailable = pp_worker_entry_available() != 0

  /// Where a spawn stands once `start` returns.
  enum Start {
    case spawned(SpawnedWorker)
    /// Asked of the fork server, which has not answered yet (see `finish`).
    case pending(PendingWorker)
  }

  /// Starts a worker of `launcher`, with its stderr as `standardError` says. A local worker is
  /// forked by the fork server where it runs, else spawned. The fork server's answer is not
  /// waited for: `poller` is woken when it is there (`wake` is called when another pool's
  /// thread read it), and `finish` makes the worker of it. `forksInFlight`: the pending spawns
  /// of the caller, each to open a descriptor (its pidfd) when answered.
  static func start(
    _ launcher: WorkerLauncher, standardError: ProcessPoolExecutor.WorkerStandardError, backtraces: Bool,
    forksInFlight: Int, poller: EventPoller?, owner: ObjectIdentifier?, wake: (@Sendable () -> Void)?
  ) throws(SpawnFailure) -> Start {
    while true {
      if let start = try startOnce(
        launcher, standardError: standardError, backtraces: backtraces, forksInFlight: forksInFlight, poller: poller,
        owner: owner, wake: wake)
      {
        return start
      }
    }
  }

  /// The worker a pending spawn became, once its answer is there; nil when the fork server
  /// died before it answered (whether a worker started is unknown: start over, with new
  /// descriptors). The descriptors are closed when no worker came.
  static func finish(_ pending: PendingWorker) throws(SpawnFailure) -> SpawnedWorker? {
    guard case .forked(let pid) = pending.request.answer else {
      Syscall.close(pending.socket)
      if let standardError = pending.standardError { Syscall.close(standardError) }
      if case .failed(let error) = pending.request.answer { throw SpawnFailure("cannot start a worker", error) }
      return nil
    }
    // Without a pidfd (an old kernel, or no descriptor left) the end of the socket says when
    // the worker is gone, as before.
    return SpawnedWorker(
      pid: pid, socket: pending.socket, ring: pending.ring, pidfd: try? Syscall.pidfdOpen(pid),
      standardError: pending.standardError)
  }

  /// One attempt; nil when the fork server died while it handled the request.
  private static func startOnce(
    _ launcher: WorkerLauncher, standardError: ProcessPoolExecutor.WorkerStandardError, backtraces: Bool,
    forksInFlight: Int, poller: EventPoller?, owner: ObjectIdentifier?, wake: (@Sendable () -> Void)?
  ) throws(SpawnFailure) -> Start? {
    if pp_started_as_worker() != 0 && !WorkerLoop.isActive.load(ordering: .acquiring) {
      throw SpawnFailure(
        ProcessPoolError(
          .workerStartFailed,
          "this process was started as a pool worker but its worker loop never ran, so it may not start workers "
            + "itself"))
    }
    if launcher.arguments == nil && !localEntryAvailable {
      throw SpawnFailure(ProcessPoolError(.workerStartFailed, bootstrapAdvice))
    }
    let ends: (Int32, Int32)
    do {
      ends = try Syscall.socketPair()
    } catch {
      throw SpawnFailure("cannot create the worker's socket", error)
    }
    // Descriptors are handed out lowest first, so a new one this close to the limit means all
    // but a few are taken: the pool leaves those to the rest of the program (libdispatch, for
    // one, traps when it cannot open a file) and goes on with the workers it has.
    // (The forks in flight will each take one more.)
    if let limit = Syscall.descriptorLimit(),
      Int(max(ends.0, ends.1)) >= limit - Self.reservedDescriptors - forksInFlight
    {
      Syscall.close(ends.0)
      Syscall.close(ends.1)
      throw SpawnFailure(
        "another worker would leave fewer than \(Self.reservedDescriptors) descriptors to the rest of the program",
        Errno(code: EMFILE, call: "socketpair"))
    }
    let parentEnd = ends.0
    // Owned by the caller once spawned; closed here on any failure.
    var spawned = false
    defer { if !spawned { Syscall.close(parentEnd) } }
    defer { Syscall.close(ends.1) }
    do {
      try Syscall.setNonBlocking(parentEnd)
    } catch {
      throw SpawnFailure("cannot configure the worker's socket", error)
    }
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
    // Both ends: a large payload crosses in fewer rounds of wake-ups in either direction. Not
    // for a worker with the shared regions: its large values never cross the socket, and the
    // four calls are a tenth of what the parent spends on a new worker.
    if ring?.ring.values == nil {
      Syscall.setSocketBuffers(parentEnd, bytes: 1 << 20)
      Syscall.setSocketBuffers(ends.1, bytes: 1 << 20)
    }
    var errorPipe: (read: Int32, write: Int32)?
    if standardError != .inherit {
      do {
        errorPipe = try Syscall.outputPipe()
      } catch {
        throw SpawnFailure("cannot create the worker's stderr pipe", error)
      }
    }
    defer { if let errorPipe { Syscall.close(errorPipe.write) } }
    defer { if !spawned, let errorPipe { Syscall.close(errorPipe.read) } }

    // Only a process the pool started may become a worker: the marker carries a token that is
    // new for each worker, and the worker checks that the same bytes come first on its socket
    // (written now, so a local worker finds them there at once).
    let token = newToken()
    do {
      let sent = try Array(token.utf8).withUnsafeBytes { bytes throws(Errno) in
        try Syscall.send(parentEnd, bytes.baseAddress!, bytes.count, nonBlocking: true)
      }
      guard sent == Int(PP_TOKEN_LENGTH) else { throw Errno(code: EAGAIN, call: "send") }
    } catch let error as Errno {
      throw SpawnFailure("cannot write the worker's token", error)
    } catch {
      throw SpawnFailure(ProcessPoolError(.workerStartFailed, "cannot write the worker's token: \(error)"))
    }
    let launcherMarker = WorkerLauncher.environmentMarker + ":" + token
    let marker = command == nil ? PP_WORKER_ENV + "=3,4:" + token : launcherMarker
    let backtrace = command == nil ? backtraceEntry(backtraces: backtraces) : nil
    let environment = Self.environment(marker: marker, backtraceEntry: backtrace)
    // The backtracer's setting is read once, when the runtime starts: a worker that needs
    // another one than the fork server's is spawned.
    if command == nil, let backtrace {
      switch ForkServer.requestSpawn(
        socket: ends.1, ring: ring?.fd ?? -1, standardError: errorPipe?.write ?? -1,
        environment: environment.flatMap { $0 }, backtraceEntry: backtrace, poller: poller, owner: owner, wake: wake)
      {
      case .sent(let request):
        spawned = true
        return .pending(
          PendingWorker(request: request, socket: parentEnd, ring: ring?.ring, standardError: errorPipe?.read))
      // The worker's token may be gone with a worker that died with the server: start over,
      // with new descriptors and a new server (or, after a few, without one).
      case .lost: return nil
      case .unavailable: break
      }
    }
    // A launcher whose command line passes the marker on itself (`env PROCESSPOOL_WORKER_FD=stdio
    // app`, and the ssh launcher's remote command) gets this worker's token there too.
    let pid = try posixSpawn(
      program: command?[0] ?? selfExecutable,
      arguments: command?.map { $0.replacing(WorkerLauncher.environmentMarker, with: launcherMarker) }
        ?? [CommandLine.arguments.first ?? "processpool-worker"],
      launched: command != nil, environment: environment, socket: ends.1, ring: ring?.fd ?? -1,
      standardError: errorPipe?.write ?? -1)
    // Without a pidfd (an old kernel, or no descriptor left) the end of the socket says when
    // the worker is gone, as before.
    let pidfd = try? Syscall.pidfdOpen(pid)
    spawned = true
    return .spawned(
      SpawnedWorker(pid: pid, socket: parentEnd, ring: ring?.ring, pidfd: pidfd, standardError: errorPipe?.read))
  }

  /// This process's environment for a new process of the pool, each entry with its NUL (bytes
  /// as they are: an entry need not be UTF-8): without any marker of ours (a marker the program
  /// set must not shadow the new one), with `marker`, and with `backtraceEntry` unless the user's
  /// own `SWIFT_BACKTRACE` is there already.
  static func environment(marker: String, backtraceEntry: String?) -> [[CChar]] {
    let markerPrefix = PP_WORKER_ENV + "="
    var environment: [[CChar]] = []
    var backtraceSet = false
    if let base = pp_environ() {
      var index = 0
      while let entry = base[index] {
        if strncmp(entry, markerPrefix, markerPrefix.utf8.count) != 0 {
          environment.append(Array(UnsafeBufferPointer(start: entry, count: strlen(entry) + 1)))
        }
        if strncmp(entry, "SWIFT_BACKTRACE=", 16) == 0 { backtraceSet = true }
        index += 1
      }
    }
    environment.append(marker.utf8CString.map { $0 })
    if let backtraceEntry, !backtraceSet { environment.append(backtraceEntry.utf8CString.map { $0 }) }
    return environment
  }

  /// The `SWIFT_BACKTRACE` entry of a local worker: the user's, else `backtracerOff` unless
  /// `backtraces` (nil: none). The runtime's backtracer makes a crash about ten times slower and
  /// prints some 70 lines; the message of a fatalError is printed without it.
  static func backtraceEntry(backtraces: Bool) -> String? {
    if let value = getenv("SWIFT_BACKTRACE") { return "SWIFT_BACKTRACE=" + String(cString: value) }
    return backtraces ? nil : backtracerOff
  }

  /// posix_spawn of a launcher's command (`launched`), or of this executable.
  private static func posixSpawn(
    program: String, arguments: [String], launched: Bool, environment: [[CChar]], socket: Int32, ring: Int32,
    standardError: Int32
  ) throws(SpawnFailure) -> pid_t {
    let arguments = arguments.map { strdup($0) } + [nil]
    let environment = environment.map { entry in entry.withUnsafeBufferPointer { strdup($0.baseAddress!) } } + [nil]
    defer {
      for argument in arguments { free(argument) }
      for entry in environment { free(entry) }
    }
    var pid: pid_t = 0
    let rc = arguments.withUnsafeBufferPointer { argv in
      environment.withUnsafeBufferPointer { envp in
        pp_spawn_worker(
          &pid, program, argv.baseAddress, envp.baseAddress, socket, ring, launched ? 1 : 0, standardError)
      }
    }
    guard rc == 0 else {
      throw SpawnFailure("cannot start \(program)", Errno(code: rc, call: "posix_spawn"))
    }
    return pid
  }

  /// `PP_TOKEN_LENGTH` random hex digits.
  static func newToken() -> String {
    var generator = SystemRandomNumberGenerator()
    let digits = Array("0123456789abcdef".utf8)
    var token: [UInt8] = []
    for _ in 0..<(Int(PP_TOKEN_LENGTH) / 16) {
      var bits = generator.next()
      for _ in 0..<16 {
        token.append(digits[Int(bits & 15)])
        bits >>= 4
      }
    }
    return String(decoding: token, as: UTF8.self)
  }

  /// What a local worker's environment gets unless the user set `SWIFT_BACKTRACE` or asked for
  /// backtraces.
  static let backtracerOff = "SWIFT_BACKTRACE=enable=no"

  /// Descriptors below the process's limit that spawning leaves free.
  static let reservedDescriptors = 8

  /// `/proc/self/exe` resolves in the spawning process, so a rebuilt or moved binary still
  /// starts the code that is running.
  static let selfExecutable = "/proc/self/exe"
}
