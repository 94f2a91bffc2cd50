import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// The Slurm cluster the Slurm launcher tests run workers on: the one `.ci/run` starts on this
/// machine with `Scripts/slurm-up.sh` (a real slurmctld and slurmd; `SLURM_CONF` in the
/// environment names its configuration), or any cluster `srun` reaches from here.
///
/// The tests are skipped, with a message, only when Slurm's client is not installed. Installed
/// but not running, they fail: start it with `source Scripts/slurm-up.sh`.
enum SlurmFixture {
  /// Why the tests cannot run here, or nil when they can.
  static let unavailableReason: String? = {
    for program in ["/usr/bin/srun", "/usr/bin/squeue", "/usr/bin/setsid", "/usr/bin/setpriv"]
    where access(program, X_OK) != 0 {
      return
        "\(program) is not installed (Debian: slurm-client slurmd slurmctld munge); the Slurm launcher tests are skipped"
    }
    return nil
  }()

  static var available: Bool { unavailableReason == nil }

  /// Why no cluster answers (installed but not running), or nil: checked once, so that every
  /// test fails at once with the reason instead of waiting for workers that cannot start.
  static let clusterProblem: String? = {
    if captureOutput(["/usr/bin/squeue", "--noheader", "--format=%i"]) != nil { return nil }
    return "squeue cannot reach a Slurm controller: start one with `source Scripts/slurm-up.sh` "
      + "(it exports SLURM_CONF), as .ci/run does"
  }()

  /// The job name of this test process's workers, so that `squeue` shows only theirs.
  static let jobName = "pp-test-\(getpid())"

  /// A launcher for `workers` workers of this test binary, one `srun` job each.
  static func launcher(workers: Int, arguments: [String] = []) -> WorkerLauncher {
    .slurm(workers: workers, arguments: ["--job-name=\(jobName)"] + arguments)
  }

  /// This test process's jobs Slurm still knows (pending, running or completing), as
  /// "id state" lines.
  static func jobs() -> [String] {
    let output =
      captureOutput(["/usr/bin/squeue", "--noheader", "--name=\(jobName)", "--format=%i %T"]) ?? "squeue failed"
    return output.split(separator: "\n").map(String.init)
  }

  /// Cancels every job of this process's workers (pending ones too).
  static func cancelJobs() {
    runProgram(["/usr/bin/scancel", "--name=\(jobName)"])
  }

  /// Waits until Slurm has no job of this process left (a step ends a moment after its srun:
  /// Slurm cleans up on its own time, and nothing signals it here, so look every 100 ms).
  /// Returns the jobs still there at `timeout`.
  static func jobsLeft(after timeout: Duration = .seconds(30), matching id: String? = nil) -> [String] {
    waitUntilEmpty(timeout: timeout) {
      jobs().filter { id == nil || $0.split(separator: " ").first.map(String.init) == id }
    }
  }

  /// Waits until the job steps of `job` (its own batch and extern steps aside) are gone; returns
  /// those still there at `timeout`.
  static func stepsLeft(of job: String, after timeout: Duration = .seconds(30)) -> [String] {
    waitUntilEmpty(timeout: timeout) {
      let output =
        captureOutput(["/usr/bin/squeue", "--noheader", "--steps", "--jobs=\(job)", "--format=%i"]) ?? "squeue failed"
      return output.split(separator: "\n").map(String.init).filter {
        !$0.hasSuffix(".batch") && !$0.hasSuffix(".extern")
      }
    }
  }

  private static func waitUntilEmpty(timeout: Duration, _ list: () -> [String]) -> [String] {
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: timeout)
    while true {
      let left = list()
      if left.isEmpty || clock.now >= deadline { return left }
      usleep(100_000)
    }
  }
}

/// The Slurm job a worker runs in, from its environment ("" outside Slurm).
struct SlurmJobID: ProcessTask {
  func run(_: Int) async throws -> String {
    getenv("SLURM_JOB_ID").map { String(cString: $0) } ?? ""
  }
}

/// Runs a program to its end; returns what it wrote to standard output, or nil when it could
/// not be started or failed.
func captureOutput(_ arguments: [String]) -> String? {
  var ends: [Int32] = [0, 0]
  guard pipe(&ends) == 0 else { return nil }
  var actions = posix_spawn_file_actions_t()
  posix_spawn_file_actions_init(&actions)
  defer { posix_spawn_file_actions_destroy(&actions) }
  posix_spawn_file_actions_adddup2(&actions, ends[1], 1)
  posix_spawn_file_actions_addclose(&actions, ends[0])
  let argv = arguments.map { strdup($0) } + [nil]
  defer { for argument in argv { free(argument) } }
  var pid: pid_t = 0
  let spawned = posix_spawn(&pid, arguments[0], &actions, nil, argv, environ)
  close(ends[1])
  var output: [UInt8] = []
  var buffer = [UInt8](repeating: 0, count: 4096)
  while spawned == 0 {
    let count = read(ends[0], &buffer, buffer.count)
    if count < 0 && errno == EINTR { continue }
    if count <= 0 { break }
    output += buffer[0..<count]
  }
  close(ends[0])
  guard spawned == 0 else { return nil }
  var status: Int32 = 0
  while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
  guard status == 0 else { return nil }
  return String(decoding: output, as: UTF8.self)
}
