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
    /// The requests sent to the server and not answered yet, oldest first: it answers them in
    /// that order, whichever pool sent them.
    var pending: [Request] = []
    /// The pollers (epoll descriptors) that watch the server's socket, with the number of their
    /// requests in flight: each I/O thread that waits for an answer is woken when one comes, and
    /// reads every answer there is. A poller stops watching when it waits for none, so a pool
    /// with nothing asked is not woken for another's answers.
    var watchers: [Int32: Int] = [:]
  }

  private static let state = Mutex(State())
  private static let attemptLimit = 3
  /// Requests in flight at most: the server's answers, unread, must never fill the socket (it
  /// would block on one while this process blocks on sending it a request).
  private static let pendingLimit = 16

  /// The running server's pid and the parent's descriptor of its socket (for the tests' leak
  /// checks, which expect them to stay).
  static var current: (pid: pid_t, socket: Int32)? {
    state.withLock { state in state.server.map { ($0.pid, $0.socket) } }
  }

  /// A spawn or wait request whose answer comes later: the I/O thread that sent it goes on with
  /// its loop while the server forks or reaps, and is woken by its poller (or by the pool whose
  /// thread read the answer) when it is there.
  final class Request: Sendable {
    enum Answer: Sendable {
      /// A spawn's worker.
      case forked(pid_t)
      /// A wait's raw status, or nil while the worker runs.
      case waited(Int32?)
      /// The server could not fork or wait.
      case failed(Errno)
      /// The server died before it answered: for a spawn, whether a worker started is unknown;
      /// a wait's worker is gone with it, reaped by whoever adopted it.
      case lost
    }

    /// The pid a wait request is about (nil: a spawn).
    fileprivate let waited: pid_t?
    /// The pool that sent it, not to be woken by its own thread.
    fileprivate let owner: ObjectIdentifier?
    /// Wakes the owner's I/O thread when another thread read the answer.
    fileprivate let wake: (@Sendable () -> Void)?
    /// The poller that watches the server's socket for it.
    fileprivate let watcher: EventPoller?
    private let result = Mutex<Answer?>(nil)

    fileprivate init(waited: pid_t?, owner: ObjectIdentifier?, wake: (@Sendable () -> Void)?, watcher: EventPoller?) {
      self.waited = waited
      self.owner = owner
      self.wake = wake
      self.watcher = watcher
    }

    /// The server's answer, nil until it came.
    var answer: Answer? { result.withLock { $0 } }

    fileprivate func answer(_ answer: Answer, readBy reader: ObjectIdentifier?) {
      result.withLock { $0 = answer }
      if reader == nil || reader != owner { wake?() }
    }
  }

  /// What becomes of a request.
  enum Submission {
    /// Sent: its answer comes later.
    case sent(Request)
    /// The server died before it took the request: start over.
    case lost
    /// No server can run: spawn the worker instead.
    case unavailable
  }

  /// Asks for a worker with `socket` on fd 3, `ring` on fd 4, `standardError` (or, when -1, this
  /// process's) as its stderr, and `environment` (NUL-terminated entries, the marker with the
  /// worker's token among them; `backtraceEntry` is its `SWIFT_BACKTRACE` entry), and returns
  /// without waiting for the fork. `poller` (if any) is woken when the answer is there, `wake` is
  /// called when another pool's thread read it. The descriptors went with the request: the
  /// caller may close its copies.
  static func requestSpawn(
    socket: Int32, ring: Int32, standardError: Int32, environment: [CChar], backtraceEntry: String?,
    poller: EventPoller? = nil, owner: ObjectIdentifier? = nil, wake: (@Sendable () -> Void)? = nil
  ) -> Submission {
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
      guard makeRoom(&state) else { return .lost }
      let rc = environment.withUnsafeBufferPointer { bytes in
        pp_fork_server_send_spawn(server.socket, socket, ring, standardError, bytes.baseAddress, UInt(bytes.count))
      }
      guard rc == 0 else {
        stop(&state)
        return rc == PP_FORK_SERVER_LOST ? .lost : .unavailable
      }
      let request = Request(waited: nil, owner: owner, wake: wake, watcher: poller)
      state.pending.append(request)
      watch(for: request, &state)
      return .sent(request)
    }
  }

  /// Asks the server that forked `pid` to reap it (WNOHANG when `noHang`) and returns without
  /// waiting: nil when the server did not fork it (the caller waits for it itself).
  static func requestWait(
    _ pid: pid_t, noHang: Bool, poller: EventPoller? = nil, owner: ObjectIdentifier? = nil,
    wake: (@Sendable () -> Void)? = nil
  ) -> Request? {
    state.withLock { state in
      guard let server = state.server, server.generation == pp_fork_generation(), server.workers.contains(pid)
      else { return nil }
      let request = Request(waited: pid, owner: owner, wake: wake, watcher: poller)
      guard makeRoom(&state) else {
        request.answer(.lost, readBy: owner)
        return request
      }
      guard pp_fork_server_send_wait(server.socket, pid, noHang ? 1 : 0) == 0 else {
        stop(&state)
        request.answer(.lost, readBy: owner)
        return request
      }
      state.pending.append(request)
      watch(for: request, &state)
      return request
    }
  }

  /// Reads the answers the server has sent (on an event of its socket), without waiting for any.
  /// `reader`: the pool whose thread reads (its own requests' threads are not woken).
  static func collect(by reader: ObjectIdentifier?) {
    state.withLock { state in
      while !state.pending.isEmpty, readAnswer(&state, nonBlocking: true, by: reader) {}
    }
  }

  /// Stops watching the server's socket in `poller` (before the poller is closed).
  static func unwatch(_ poller: EventPoller) {
    state.withLock { state in
      guard state.watchers.removeValue(forKey: poller.fd) != nil, let server = state.server else { return }
      poller.remove(server.socket)
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
    guard let request = requestWait(pid, noHang: noHang) else { return try Syscall.waitPID(pid, noHang: noHang) }
    switch answer(to: request) {
    case .waited(let status): return status
    case .failed(let error): throw error
    // Gone, and its workers with it, reaped by whoever adopted them: no status to report.
    case .lost, .forked: throw Errno(code: ECHILD, call: "waitpid")
    }
  }

  /// Reads answers, blocking, until `request`'s is there.
  static func answer(to request: Request) -> Request.Answer {
    state.withLock { state in
      while request.answer == nil {
        if state.pending.isEmpty || !readAnswer(&state, nonBlocking: false, by: nil) { break }
      }
    }
    // Every request is answered once taken off `pending` (a lost server answers them all).
    return request.answer ?? .lost
  }

  /// Waits for the oldest answers while as many requests as the limit are in flight; false
  /// when the server was lost meanwhile.
  private static func makeRoom(_ state: inout State) -> Bool {
    while state.pending.count >= pendingLimit {
      _ = readAnswer(&state, nonBlocking: false, by: nil)
      if state.server == nil { return false }
    }
    return true
  }

  /// Reads one answer and gives it to the oldest request; false when none was there
  /// (`nonBlocking`) or the server is gone (then every request was answered `lost`).
  private static func readAnswer(_ state: inout State, nonBlocking: Bool, by reader: ObjectIdentifier?) -> Bool {
    guard let server = state.server, !state.pending.isEmpty else { return false }
    var result: Int32 = 0
    var status: Int32 = 0
    var error: Int32 = 0
    let rc = pp_fork_server_read_reply(server.socket, nonBlocking ? 1 : 0, &result, &status, &error)
    if rc == 0 { return false }
    guard rc == 1 else {
      stop(&state)
      return false
    }
    let request = state.pending.removeFirst()
    if let poller = request.watcher, let count = state.watchers[poller.fd] {
      if count > 1 {
        state.watchers[poller.fd] = count - 1
      } else {
        state.watchers[poller.fd] = nil
        poller.remove(server.socket)
      }
    }
    let answer: Request.Answer
    if let pid = request.waited {
      if result != 0 { state.server!.workers.remove(pid) }
      if result < 0 {
        answer = .failed(Errno(code: error != 0 ? error : ECHILD, call: "waitpid"))
      } else {
        answer = .waited(result == 0 ? nil : status)
      }
    } else if result < 0 {
      answer = .failed(Errno(code: error != 0 ? error : EAGAIN, call: "fork"))
    } else {
      state.server!.workers.insert(result)
      state.failures = 0
      answer = .forked(result)
    }
    request.answer(answer, readBy: reader)
    return true
  }

  /// Watches the server's socket in the poller of `request` (if any) until its answer; where it
  /// cannot, the answer is waited for now.
  private static func watch(for request: Request, _ state: inout State) {
    guard let poller = request.watcher, let server = state.server else { return }
    if let count = state.watchers[poller.fd] {
      state.watchers[poller.fd] = count + 1
      return
    }
    guard (try? poller.add(server.socket, .socket, worker: 0)) != nil else {
      while request.answer == nil && readAnswer(&state, nonBlocking: false, by: request.owner) {}
      return
    }
    state.watchers[poller.fd] = 1
  }

  /// The server, started if none runs (nil if it cannot be).
  private static func running(_ state: inout State, backtraceEntry: String?) -> Server? {
    if let server = state.server {
      if server.generation == pp_fork_generation() { return server }
      // This process is a fork of the one that started it: that one's to use, not ours (our
      // copy of its socket is closed; the server and its workers are not our children).
      Syscall.close(server.socket)
      state.server = nil
      // The pollers and requests are the other process's (removing the socket from a poller
      // would remove it from that process's: the epoll instance is shared).
      state.watchers = [:]
      state.pending = []
    }
    guard state.failures < attemptLimit, WorkerSpawner.localEntryAvailable else { return nil }
    if let server = start(backtraceEntry: backtraceEntry) {
      state.server = server
      return server
    }
    state.failures += 1
    return nil
  }

  /// Ends the server (it may be gone already) and reaps it. Its workers die with it, and every
  /// request in flight is answered `lost`.
  private static func stop(_ state: inout State) {
    guard let server = state.server else { return }
    state.server = nil
    state.failures += 1
    // Removed before the socket is closed: its number may be reused at once.
    for watcher in state.watchers.keys {
      _ = try? Syscall.epollControl(watcher, EPOLL_CTL_DEL, server.socket, events: 0, data: 0)
    }
    state.watchers = [:]
    let pending = state.pending
    state.pending = []
    for request in pending { request.answer(.lost, readBy: nil) }
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
