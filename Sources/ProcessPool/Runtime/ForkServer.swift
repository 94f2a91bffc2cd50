import CProcessPoolShims
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Starts local workers by forking them from a fork server: one process of this executable per
/// process, started with the first local worker, that stops in the pre-main hook (loaded, linked,
/// no runtime thread yet) and forks a worker per request, a fraction of the cost of starting the
/// executable again. The workers are its children, so it also reaps them, when the pool asks
/// (see `waitPID`): until then a worker's pid stays its own, and the pool may still signal it.
///
/// It ends when this process does (end of stream on its socket), and its workers with it
/// (their parent-death signal). Where it cannot run, workers are spawned as before.
enum ForkServer {
  private struct Server {
    let pid: pid_t
    /// The parent's end of its socket (blocking, close-on-exec).
    let socket: Int32
    /// The `pp_fork_generation` of the process that started it: a forked copy of this process
    /// must not talk to it.
    let generation: UInt32
    /// Its `SWIFT_BACKTRACE` entry: the runtime reads it once, at start, so only workers that
    /// would get the same one may be forked.
    let backtraceEntry: String?
    /// The workers it forked that the pool has not reaped yet.
    var workers: Set<pid_t> = []
    /// The task and initializer types it has looked up (see `pp_fork_server_prepare`).
    var prepared: Set<String> = []
  }

  private struct State {
    var server: Server?
    /// Servers that could not start or died in a row; at `attemptLimit`, no more are tried.
    var failures = 0
  }

  private static let state = Mutex(State())
  private static let attemptLimit = 3

  /// The running server's pid and the parent's descriptor of its socket (for the tests' leak
  /// checks, which expect them to stay).
  static var current: (pid: pid_t, socket: Int32)? {
    state.withLock { state in state.server.map { ($0.pid, $0.socket) } }
  }

  enum Outcome {
    case forked(pid_t)
    /// The server could not fork (no memory, too many processes).
    case failed(Errno)
    /// The server died while it handled the request: whether a worker started is unknown, so
    /// the worker's descriptors must not be reused.
    case lost
    /// No server can run: spawn the worker instead.
    case unavailable
  }

  /// A worker with `socket` on fd 3, `ring` on fd 4, `standardError` (or, when -1, this
  /// process's) as its stderr, and `environment` (NUL-terminated entries, the marker with the
  /// worker's token among them; `backtraceEntry` is its `SWIFT_BACKTRACE` entry).
  static func spawn(
    socket: Int32, ring: Int32, standardError: Int32, environment: [CChar], backtraceEntry: String?
  ) -> Outcome {
    state.withLock { state in
      guard let server = running(&state, backtraceEntry: backtraceEntry),
        server.backtraceEntry == backtraceEntry
      else { return .unavailable }
      if TaskTypeRegistry.resolvedCount != server.prepared.count {
        let names = TaskTypeRegistry.resolvedNames().filter { !server.prepared.contains($0) }
        var block: [UInt8] = []
        for name in names { block += name.utf8 + [0] }
        let rc = block.withUnsafeBytes { bytes in
          pp_fork_server_prepare(
            server.socket, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), UInt(bytes.count))
        }
        guard rc == 0 else {
          stop(&state)
          return rc == PP_FORK_SERVER_LOST ? .lost : .unavailable
        }
        state.server!.prepared.formUnion(names)
      }
      var pid: pid_t = 0
      let rc = environment.withUnsafeBufferPointer { bytes in
        pp_fork_server_spawn(server.socket, socket, ring, standardError, bytes.baseAddress, UInt(bytes.count), &pid)
      }
      if rc == 0 {
        state.server!.workers.insert(pid)
        state.failures = 0
        return .forked(pid)
      }
      if rc < 0 { return .failed(Errno(code: -rc, call: "fork")) }
      stop(&state)
      return rc == PP_FORK_SERVER_LOST ? .lost : .unavailable
    }
  }

  /// `waitpid` for a worker: through its fork server for one it forked, else directly. Returns
  /// the raw status, or nil with `noHang` while it runs. `pidfd`: one the caller holds open for
  /// `pid`, used instead of opening another.
  static func waitPID(_ pid: pid_t, pidfd known: Int32? = nil, noHang: Bool) throws(Errno) -> Int32? {
    // The server answers one request at a time, for every pool of this process: a worker that
    // takes its time to exit is waited for here, through its pidfd (the caller's, when it has
    // one open), not in the server.
    if !noHang, state.withLock({ $0.server?.workers.contains(pid) == true }),
      let pidfd = known ?? (try? Syscall.pidfdOpen(pid))
    {
      var exit = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
      _ = try? Syscall.poll(&exit, 1, timeoutMilliseconds: -1)
      if known == nil { Syscall.close(pidfd) }
      if let status = try wait(pid, noHang: true) { return status }
    }
    return try wait(pid, noHang: noHang)
  }

  private static func wait(_ pid: pid_t, noHang: Bool) throws(Errno) -> Int32? {
    let answer: Result<Int32?, Errno>? = state.withLock { state in
      guard let server = state.server, server.generation == pp_fork_generation(), server.workers.contains(pid)
      else { return nil }
      var result: pid_t = 0
      var status: Int32 = 0
      let rc = pp_fork_server_wait(server.socket, pid, noHang ? 1 : 0, &result, &status)
      if rc == 0 && result == 0 { return .success(nil) }
      state.server!.workers.remove(pid)
      if rc == 0 { return .success(status) }
      if rc < 0 { return .failure(Errno(code: -rc, call: "waitpid")) }
      // Gone, and its workers with it, reaped by whoever adopted them: no status to report.
      stop(&state)
      return .failure(Errno(code: ECHILD, call: "waitpid"))
    }
    guard let answer else { return try Syscall.waitPID(pid, noHang: noHang) }
    return try answer.get()
  }

  /// The server, started if none runs (nil if it cannot be).
  private static func running(_ state: inout State, backtraceEntry: String?) -> Server? {
    if let server = state.server {
      if server.generation == pp_fork_generation() { return server }
      // This process is a fork of the one that started it: that one's to use, not ours (our
      // copy of its socket is closed; the server and its workers are not our children).
      Syscall.close(server.socket)
      state.server = nil
    }
    guard state.failures < attemptLimit, WorkerSpawner.localEntryAvailable else { return nil }
    if let server = start(backtraceEntry: backtraceEntry) {
      state.server = server
      return server
    }
    state.failures += 1
    return nil
  }

  /// Ends the server (it may be gone already) and reaps it. Its workers die with it.
  private static func stop(_ state: inout State) {
    guard let server = state.server else { return }
    state.server = nil
    state.failures += 1
    Syscall.close(server.socket)
    Syscall.kill(server.pid, SIGKILL)
    _ = try? Syscall.waitPID(server.pid, noHang: false)
  }

  /// Spawns the server: this executable with a `forkserver:<token>` marker and its end of a
  /// socket pair on fd 3, which holds the token.
  private static func start(backtraceEntry: String?) -> Server? {
    guard let ends = try? Syscall.socketPair() else { return nil }
    defer { Syscall.close(ends.1) }
    let token = WorkerSpawner.newToken()
    let sent = Array(token.utf8).withUnsafeBytes { bytes in
      try? Syscall.send(ends.0, bytes.baseAddress!, bytes.count, nonBlocking: true)
    }
    guard sent == Int(PP_TOKEN_LENGTH) else {
      Syscall.close(ends.0)
      return nil
    }
    // Every symbol bound once, in the server, rather than lazily again in each worker it forks.
    let environment =
      WorkerSpawner.environment(
        marker: PP_WORKER_ENV + "=" + PP_FORK_SERVER_MARKER + ":" + token, backtraceEntry: backtraceEntry)
      + ["LD_BIND_NOW=1".utf8CString.map { $0 }]
    var pointers = environment.map { entry in entry.withUnsafeBufferPointer { strdup($0.baseAddress!) } } + [nil]
    var arguments = [strdup(CommandLine.arguments.first ?? "processpool-worker"), nil]
    defer {
      for pointer in pointers { free(pointer) }
      for argument in arguments { free(argument) }
    }
    var pid: pid_t = 0
    let rc = pp_spawn_worker(&pid, WorkerSpawner.selfExecutable, &arguments, &pointers, ends.1, -1, 0, -1)
    guard rc == 0 else {
      Syscall.close(ends.0)
      return nil
    }
    return Server(pid: pid, socket: ends.0, generation: pp_fork_generation(), backtraceEntry: backtraceEntry)
  }
}
