import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// The worker marker in a user's environment by accident must not turn an ordinary run of the
/// program into a worker: the program (this test binary, listing its tests) runs normally and
/// says once on stderr that it ignored the marker. Its stdin is a pipe kept open and its fd 3 a
/// socket holding other bytes, so a process that became a worker would wait or misread there.
extension WorkerProcessTests {
  @Suite struct StrayMarkerTests {
    @Test(arguments: [
      "garbage", "", "-1", "0", "3", "3,4", "stdio", "3,4:0123456789abcdef0123456789abcdef", "stdio:short",
    ])
    func aStrayMarkerIsIgnoredAndMainRuns(_ marker: String) throws {
      let check = LeakCheck()
      let run = try runSelf(
        arguments: ["--testing-library", "swift-testing", "--list-tests"],
        environment: ["PROCESSPOOL_WORKER_FD=\(marker)"])
      #expect(run.status == .exited(0), "output: \(run.output)")
      // `main` ran: the test list was printed.
      #expect(run.output.contains("StrayMarkerTests/aStrayMarkerIsIgnoredAndMainRuns"))
      let notices = run.output.split(separator: "\n").filter { $0.contains("PROCESSPOOL_WORKER_FD") }
      #expect(notices.count == 1, "output: \(run.output)")
      #expect(notices.first?.contains("ignor") == true)
      check.verify()
    }
  }
}

/// How a process started by `runSelf` ended: its status and everything it wrote to stdout and
/// stderr.
struct SelfRun {
  var status: ProcessPoolError.Termination
  var output: String
}

/// Runs this executable with `arguments`, `environment` added to this process's, its stdin a
/// pipe kept open until it exits, fd 3 a socket holding unrelated bytes, and stdout and stderr
/// captured. A child still running after 60 s is killed (and reported as killed).
func runSelf(arguments: [String], environment: [String]) throws -> SelfRun {
  var input: [Int32] = [-1, -1]
  var output: [Int32] = [-1, -1]
  var socket: [Int32] = [-1, -1]
  guard pipe(&input) == 0, pipe(&output) == 0,
    socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &socket) == 0
  else { throw GateError(message: "pipe: \(errno)") }
  for fd in input + output { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
  defer { for fd in input + output + socket where fd >= 0 { close(fd) } }
  let unrelated = Array("unrelated bytes, not a token: 0123456789".utf8)
  _ = write(socket[0], unrelated, unrelated.count)

  var actions = posix_spawn_file_actions_t()
  posix_spawn_file_actions_init(&actions)
  defer { posix_spawn_file_actions_destroy(&actions) }
  posix_spawn_file_actions_adddup2(&actions, input[0], 0)
  posix_spawn_file_actions_adddup2(&actions, output[1], 1)
  posix_spawn_file_actions_adddup2(&actions, output[1], 2)
  posix_spawn_file_actions_adddup2(&actions, socket[1], 3)

  var variables: [String] = []
  var index = 0
  while let entry = environ[index] {
    let variable = String(cString: entry)
    if !variable.hasPrefix("PROCESSPOOL_WORKER_FD=") { variables.append(variable) }
    index += 1
  }
  let argv = ([ProcessPoolWorker.executablePath] + arguments).map { strdup($0) } + [nil]
  let envp = (variables + environment).map { strdup($0) } + [nil]
  defer { for pointer in argv + envp { free(pointer) } }
  var pid: pid_t = 0
  let rc = posix_spawn(&pid, ProcessPoolWorker.executablePath, &actions, nil, argv, envp)
  guard rc == 0 else { throw GateError(message: "posix_spawn: \(rc)") }
  close(output[1])
  output[1] = -1

  // Read until end of stream, at most 60 s: a child that waits for ever is killed.
  var bytes: [UInt8] = []
  var chunk = [UInt8](repeating: 0, count: 1 << 16)
  var killed = false
  while true {
    var descriptor = pollfd(fd: output[0], events: Int16(POLLIN), revents: 0)
    let ready = poll(&descriptor, 1, 60_000)
    if ready < 0 && errno == EINTR { continue }
    if ready == 0 {
      kill(pid, SIGKILL)
      killed = true
      break
    }
    let count = read(output[0], &chunk, chunk.count)
    if count < 0 && errno == EINTR { continue }
    if count <= 0 { break }
    bytes += chunk[0..<count]
  }
  var status: Int32 = 0
  while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
  let termination: ProcessPoolError.Termination =
    status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .signaled(status & 0x7f)
  var text = String(decoding: bytes, as: UTF8.self)
  if killed { text += "\n[killed after 60 s: it waited for ever]" }
  return SelfRun(status: termination, output: text)
}
