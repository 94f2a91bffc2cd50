import CProcessPoolShims

extension ProcessPoolExecutor {
  /// What a worker crash does to the rest of the pool.
  public enum CrashPolicy: Sendable, Hashable {
    /// Fail the task the worker was running, start a new worker, go on (pebble's behaviour).
    case replaceWorker
    /// Break the pool as CPython does: every pending task fails, later submits throw.
    case breakPool
  }

  /// Every setting of a pool.
  public struct Configuration: Sendable, Hashable {
    /// At most this many worker processes (default: the CPUs this process may use). Ignored
    /// when ``launchers`` is set: then the pool runs the sum of their `workers`.
    public var maxWorkers: Int = Int(pp_available_cpus())
    /// How workers start: empty (the default) means `maxWorkers` local workers. Set it to run
    /// workers on other hosts or through a launcher command, or to mix them with local ones;
    /// workers are started from the first launcher with room, in this order.
    public var launchers: [WorkerLauncher] = []
    /// Replace a worker after it has run this many tasks (a `map` chunk counts as one).
    public var maxTasksPerChild: Int?
    /// Default per-task time limit; past it the task fails with
    /// ``ProcessPoolError/Code/taskTimedOut`` and its worker is stopped and replaced.
    public var taskTimeout: Duration?
    /// What a worker crash does to the pool.
    public var crashPolicy: CrashPolicy = .replaceWorker
    /// Tasks handed to one worker at a time: the running one plus those queued on its socket.
    /// More hides the round trip for tiny tasks; 1 keeps every pending task cancellable.
    public var jobsPerWorker: Int = 2
    /// While a worker's tasks each finish within about 100 µs, hand it up to 32 tasks at a time
    /// instead of `jobsPerWorker`, so tiny tasks do not wait on round trips (at most a few
    /// milliseconds of work per worker; those tasks count as running and cannot be cancelled).
    /// Has no effect when `jobsPerWorker` is 1.
    public var adaptivePipelining = true
    /// How long a worker stopped by SIGTERM (timeout, `terminateWorkers`) has before SIGKILL.
    public var terminationGracePeriod: Duration = .seconds(3)
    /// How long a worker started by a launcher (`ssh`, `srun`, a command) may take to say hello
    /// (default: 60 seconds; nil: no limit). Past it the worker's process group is stopped and
    /// it counts as a failed start: three in a row give its launcher up, with an error that
    /// says what to check (a launcher that buffers the worker's output never delivers the
    /// hello). Raise it for jobs that may wait in a busy queue.
    public var launchTimeout: Duration? = .seconds(60)
    /// How long a worker of a statically linked build may wait for `ProcessPoolWorker.bootstrap()`.
    public var bootstrapTimeout: Duration = .seconds(10)

    /// The defaults.
    public init() {}

    /// The launchers the pool uses: the configured ones, or `maxWorkers` local workers.
    var effectiveLaunchers: [WorkerLauncher] { launchers.isEmpty ? [.local(workers: maxWorkers)] : launchers }

    /// How many workers may run at once.
    var capacity: Int { effectiveLaunchers.reduce(0) { $0 + $1.workers } }

    func validate() throws(ProcessPoolError) {
      for launcher in launchers {
        guard launcher.workers > 0 else {
          throw ProcessPoolError(
            .invalidArgument, "a launcher must run at least 1 worker (\(launcher) has \(launcher.workers))")
        }
        if let arguments = launcher.arguments, arguments.isEmpty {
          throw ProcessPoolError(.invalidArgument, "a launcher command must name a program")
        }
      }
      guard !launchers.isEmpty || maxWorkers > 0 else {
        throw ProcessPoolError(.invalidArgument, "maxWorkers must be greater than 0 (got \(maxWorkers))")
      }
      if let maxTasksPerChild, maxTasksPerChild < 1 {
        throw ProcessPoolError(.invalidArgument, "maxTasksPerChild must be at least 1 (got \(maxTasksPerChild))")
      }
      if let taskTimeout, taskTimeout <= .zero {
        throw ProcessPoolError(.invalidArgument, "taskTimeout must be positive (got \(taskTimeout))")
      }
      if let launchTimeout, launchTimeout <= .zero {
        throw ProcessPoolError(.invalidArgument, "launchTimeout must be positive (got \(launchTimeout))")
      }
      guard jobsPerWorker >= 1 else {
        throw ProcessPoolError(.invalidArgument, "jobsPerWorker must be at least 1 (got \(jobsPerWorker))")
      }
    }
  }

  /// A snapshot of what the pool has done and is doing: a value, `Codable`, to log or export.
  ///
  /// ```swift
  /// let stats = pool.statistics
  /// print("\(stats.tasksCompleted) done, \(stats.workersCrashed) crashes: \(stats.crashes)")
  /// ```
  public struct Statistics: Sendable, Hashable, Codable {
    /// Worker processes alive now (starting, working, idle or stopping).
    public var workersAlive = 0
    /// Workers running a task now.
    public var workersBusy = 0
    /// Workers that said hello and have nothing to do now.
    public var workersIdle = 0
    /// Worker processes started since the pool was created.
    public var workersStarted = 0
    /// Workers that died unexpectedly after starting (each was replaced, or broke the pool).
    public var workersCrashed = 0
    /// How the crashed workers ended: exit status or signal, and how many ended that way.
    public var crashes: [ProcessPoolError.Termination: Int] = [:]
    /// Workers that died, or could not be spawned, before they said hello.
    public var workersFailedToStart = 0
    /// Workers retired at `maxTasksPerChild`.
    public var workersRetired = 0
    /// Workers the pool stopped: a task timeout, `cancel(terminatingWorker:)`, a protocol violation.
    public var workersStopped = 0
    /// Time from spawning to the hello, summed over every worker that said hello (divide by
    /// `workersStarted` for a mean; an ssh worker's includes the connection).
    public var timeStartingWorkers: Duration = .zero
    /// Jobs waiting for a worker.
    public var tasksQueued = 0
    /// Jobs handed to workers and not answered.
    public var tasksRunning = 0
    /// Jobs submitted (a `map` chunk counts as one).
    public var tasksSubmitted = 0
    /// Jobs answered by a worker (with a value or the task's error).
    public var tasksCompleted = 0
    /// Jobs that failed because their worker died, timed out or broke the protocol.
    public var tasksFailed = 0
    /// Jobs stopped by their per-task timeout.
    public var tasksTimedOut = 0
  }
}
