import CProcessPoolShims
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Starts local workers by forking them from a fork server: one process of this executable per
/// process, started with the first local worker, that stops in the pre-main hook (loaded, linked,
/// no runtime thread yet) and forks a worker per request, a fraction of the cost of starting the
/// executable again. The workers are its children. Where a pidfd keeps its process's exit status
/// once reaped (Linux 6.15), the kernel reaps them as they exit and each comes with its pidfd,
/// made before it could be reaped: the pool signals it and reads its status through that, without
/// a request (see `waitPID`). Elsewhere the server reaps a worker when the pool asks: until then
/// its pid stays its own, and the pool may still signal it.
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
    /// The workers that came with a pidfd (the kernel reaps them) and whose status the pool has
    /// not read yet, counted (a pid may come back once reaped).
    var reapedByKernel: [pid_t: Int] = [:]
    /// Servers that could not start or died in a row; at `attemptLimit`, no more are tried.
    var failures = 0
    /// The next server reaps its workers only when asked, whatever the kernel (tests).
    var waitRequests = false
  }

  private static let state = Mutex(State())
  private static let attemptLimit = 3

  /// The running server's pid and the parent's descriptor of its socket (for the tests' leak
  /// checks, which expect them to stay).
  static var current: (pid: pid_t, socket: Int32)? {
    state.withLock { state in state.server.map { ($0.pid, $0.socket) } }
  }

  enum Outcome {
    /// With its pidfd where the kernel reaps it (its pid alone is then not safe to use).
    case forked(pid_t, pidfd: Int32?)
    /// The server could not fork (no memory, too many processes).
    case failed(Errno)
    /// The server died before or while it handled the request: whether a worker started is
    /// unknown, so the worker's descriptors must not be reused; the caller tries again (with a
    /// new server, up to `attemptLimit` in a row).
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
          return .lost
        }
        state.server!.prepared.formUnion(names)
      }
      var pid: pid_t = 0
      var pidfd: Int32 = -1
      let rc = environment.withUnsafeBufferPointer { bytes in
        pp_fork_server_spawn(
          server.socket, socket, ring, standardError, bytes.baseAddress, UInt(bytes.count), &pid, &pidfd)
      }
      if rc == 0 {
        state.failures = 0
        guard pidfd >= 0 else {
          state.server!.workers.insert(pid)
          return .forked(pid, pidfd: nil)
        }
        if pidfd <= 2 {
          // Above the standard streams (see `Syscall.aboveStandardStreams`), or the worker is
          // killed through it: its pid alone is not safe to use.
          let received = pidfd
          defer { Syscall.close(received) }
          do throws(Errno) {
            pidfd = try Syscall.retrying("fcntl") { fcntl(received, F_DUPFD_CLOEXEC, 3) }
          } catch {
            Syscall.signal(pidfd: received, SIGKILL)
            return .failed(error)
          }
        }
        state.reapedByKernel[pid, default: 0] += 1
        return .forked(pid, pidfd: pidfd)
      }
      if rc < 0 { return .failed(Errno(code: -rc, call: "fork")) }
      // Gone (the pool may not have noticed: it reads its workers' statuses from their pidfds):
      // tried again with a new one.
      stop(&state)
      return .lost
    }
  }

  /// `waitpid` for a worker: from its pidfd for one the kernel reaps, through its fork server for
  /// another it forked, else directly. Returns the raw status, or nil with `noHang` while it
  /// runs. `pidfd`: one the caller holds open for `pid` (the one `spawn` returned, when it did).
  static func waitPID(_ pid: pid_t, pidfd known: Int32? = nil, noHang: Bool) throws(Errno) -> Int32? {
    if let known, state.withLock({ $0.reapedByKernel[pid] != nil }) {
      return try exitStatus(pid, pidfd: known, noHang: noHang)
    }
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

  /// Reaps a worker whose status is of no interest, its pidfd closed already when
  /// `pidfdClosed` (a worker the kernel reaps needs nothing more then). It was killed.
  static func reap(_ pid: pid_t, pidfdClosed: Bool) {
    if pidfdClosed, state.withLock({ $0.reapedByKernel[pid] != nil }) {
      forget(pid)
      return
    }
    _ = try? waitPID(pid, noHang: false)
  }

  /// Drops one count of `pid` from the workers the kernel reaps.
  private static func forget(_ pid: pid_t) {
    state.withLock { state in
      if let count = state.reapedByKernel[pid], count > 1 {
        state.reapedByKernel[pid] = count - 1
      } else {
        state.reapedByKernel[pid] = nil
      }
    }
  }

  /// The status of a worker the kernel reaps, from its pidfd once it exited.
  private static func exitStatus(_ pid: pid_t, pidfd: Int32, noHang: Bool) throws(Errno) -> Int32? {
    var exit = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
    if try Syscall.poll(&exit, 1, timeoutMilliseconds: noHang ? 0 : -1) == 0 { return nil }
    defer { forget(pid) }
    // Readable once it exited; the status is there once the kernel has reaped it, a moment later.
    for _ in 0..<10_000 {
      if let status = try Syscall.pidfdExitStatus(pidfd) { return status }
      Syscall.yieldProcessor()
    }
    throw Errno(code: ECHILD, call: "ioctl(PIDFD_GET_INFO)")
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
    if let server = start(backtraceEntry: backtraceEntry, waitRequests: state.waitRequests) {
      state.server = server
      return server
    }
    state.failures += 1
    return nil
  }

  /// Runs `body` with a new fork server that reaps its workers only when asked, as on kernels
  /// before 6.15 (the server is replaced before and after; nothing may use it meanwhile but
  /// `body`). For the tests of that path on a newer kernel.
  static func withServerReapingOnRequest<T>(_ body: () async throws -> T) async rethrows -> T {
    state.withLock { state in
      stop(&state)
      state.failures = 0
      state.waitRequests = true
    }
    defer {
      state.withLock { state in
        stop(&state)
        state.failures = 0
        state.waitRequests = false
      }
    }
    return try await body()
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
  private static func start(backtraceEntry: String?, waitRequests: Bool) -> Server? {
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
      + (waitRequests ? [(PP_FORK_SERVER_WAITS_ENV + "=1").utf8CString.map { $0 }] : [])
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
