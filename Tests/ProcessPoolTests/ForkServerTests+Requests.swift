import CProcessPoolShims
import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// Kills its fork server (this worker's parent), and this worker with it.
struct KillForkServer: ProcessTask {
  func run(_: Int) async throws -> Int {
    kill(getppid(), SIGKILL)
    // The parent-death signal ends this process: the task never returns.
    while true { pause() }
  }
}

/// The worker's parent's pid.
struct ParentID: ProcessTask {
  func run(_: Int) async throws -> Int32 { getppid() }
}

/// Requests in flight at the fork server, whose answers come later: several at once, from two
/// pools at once, and a server that dies before it answered them.
extension WorkerProcessTests.ForkServerTests {
  @Test func requestsInFlightWhenTheServerDiesAreAllAnsweredAndLeaveNothing() async throws {
    // The server outlives the pool that started it; no pool uses it while it is killed.
    try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
      #expect(try await pool.submit(Square(), 3).value == 9)
    }
    let server = try #require(ForkServer.current)
    let check = LeakCheck()
    // Workers without a marker exit as soon as they are forked; the server is killed with
    // their requests in flight, its answers unread.
    var sockets: [(Int32, Int32)] = []
    var requests: [ForkServer.Request] = []
    for _ in 0..<6 {
      let ends = try Syscall.socketPair()
      sockets.append(ends)
      let submission = ForkServer.requestSpawn(
        socket: ends.1, ring: -1, standardError: -1, environment: [],
        backtraceEntry: WorkerSpawner.backtraceEntry(backtraces: false))
      guard case .sent(let request) = submission else {
        Issue.record("the request was not sent: \(submission)")
        break
      }
      requests.append(request)
    }
    kill(server.pid, SIGKILL)
    // Its socket ends once it is gone: every request is then answered, a fork or `lost`.
    while requests.contains(where: { $0.answer == nil }), let socket = ForkServer.current?.socket {
      var ready = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
      #expect(poll(&ready, 1, 30_000) == 1)
      ForkServer.collect(by: nil)
    }
    #expect(ForkServer.current == nil)
    for request in requests {
      switch request.answer {
      case .forked, .lost: break
      case let other: Issue.record("answered \(String(describing: other))")
      }
    }
    for ends in sockets {
      close(ends.0)
      close(ends.1)
    }
    check.verify()
    // The next workers come from a new server.
    try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
      let pid = try await pool.submit(ProcessID(), 0).value
      let replacement = try #require(ForkServer.current)
      #expect(replacement.pid != server.pid)
      #expect(Self.parent(of: pid) == replacement.pid)
    }
  }

  @Test func onlyAPollerWaitingForAnAnswerIsWokenByIt() async throws {
    // One server for every pool: an answer wakes the pool that asked, not an idle one.
    try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
      #expect(try await pool.submit(Square(), 3).value == 9)
    }
    let check = LeakCheck()
    let asking = try EventPoller()
    let idle = try EventPoller()
    var events = [pp_epoll_event](repeating: pp_epoll_event(), count: 4)
    var sockets: [(Int32, Int32)] = []
    var pids: [pid_t] = []
    for poller in [idle, asking] {
      // Workers without a marker exit as soon as they are forked.
      let ends = try Syscall.socketPair()
      sockets.append(ends)
      let submission = ForkServer.requestSpawn(
        socket: ends.1, ring: -1, standardError: -1, environment: [],
        backtraceEntry: WorkerSpawner.backtraceEntry(backtraces: false), poller: poller)
      guard case .sent(let request) = submission else {
        Issue.record("the request was not sent: \(submission)")
        break
      }
      // Its poller is woken by its answer (left unread until then), and only its.
      let woken = events.withUnsafeMutableBufferPointer { poller.wait(into: $0, timeoutMilliseconds: 30_000) }
      #expect(woken == 1)
      if poller === asking {
        #expect(events.withUnsafeMutableBufferPointer { idle.wait(into: $0, timeoutMilliseconds: 0) } == 0)
      }
      ForkServer.collect(by: nil)
      guard case .forked(let pid) = request.answer else {
        Issue.record("answered \(String(describing: request.answer))")
        break
      }
      pids.append(pid)
      // Answered: no longer watched.
      #expect(events.withUnsafeMutableBufferPointer { poller.wait(into: $0, timeoutMilliseconds: 0) } == 0)
    }
    for pid in pids {
      let status = try ForkServer.waitPID(pid, noHang: false)
      #expect(status.map { PoolCore.termination(fromWaitStatus: $0) } == .exited(PP_EXIT_NO_ENTRY))
    }
    for ends in sockets {
      close(ends.0)
      close(ends.1)
    }
    ForkServer.unwatch(asking)
    ForkServer.unwatch(idle)
    asking.close()
    idle.close()
    check.verify()
  }

  @Test func aServerKilledWhileWorkersAreReplacedBreaksNoOtherTask() async throws {
    var configuration = ProcessPoolExecutor.Configuration.workers(2)
    configuration.maxTasksPerChild = 1
    try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
      // Each task needs a new worker: spawns and reaps are in flight when the server dies.
      let squares = try (0..<24).map { try pool.submit(Square(), $0) }
      let killer = try pool.submit(KillForkServer(), 0)
      let more = try (24..<48).map { try pool.submit(Square(), $0) }
      await #expect { try await killer.value } throws: { ($0 as? ProcessPoolError)?.code == .workerCrashed }
      // A task running in a worker that died with the server fails with a typed error; every
      // other one completes.
      var completed = 0
      for (x, future) in zip(0..., squares + more) {
        do {
          #expect(try await future.value == x * x)
          completed += 1
        } catch {
          #expect((error as? ProcessPoolError)?.code == .workerCrashed, "\(error)")
        }
      }
      #expect(completed >= 46)
      #expect(try await pool.submit(Square(), 7).value == 49)
    }
  }

  @Test func twoPoolsReplaceTheirWorkersThroughOneServerAtOnce() async throws {
    var configuration = ProcessPoolExecutor.Configuration.workers(2)
    configuration.maxTasksPerChild = 1
    let check = LeakCheck()
    let first = try ProcessPoolExecutor(configuration: configuration)
    let second = try ProcessPoolExecutor(configuration: configuration)
    async let one = first.map(ProcessID(), Array(0..<30), chunksize: 1).reduce(into: [Int32]()) { $0.append($1) }
    async let two = second.map(ProcessID(), Array(0..<30), chunksize: 1).reduce(into: [Int32]()) { $0.append($1) }
    let (pids, others) = try await (one, two)
    // Every task in a worker of its own, each forked by the one server.
    #expect(Set(pids + others).count == 60)
    let server = try #require(ForkServer.current)
    // (A worker that ran its one task may be gone: a new one is asked for its parent.)
    #expect(try await first.submit(ParentID(), 0).value == server.pid)
    #expect(try await second.submit(ParentID(), 0).value == server.pid)
    for pool in [first, second] {
      await pool.shutdown(wait: true)
      pool.core.waitForIOThread()
    }
    check.verify()
  }
}
