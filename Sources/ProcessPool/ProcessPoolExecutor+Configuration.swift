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
    /// At most this many worker processes (default: the CPUs this process may use).
    public var maxWorkers: Int = Int(pp_available_cpus())
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
    /// How long a worker stopped by SIGTERM (timeout, `terminateWorkers`) has before SIGKILL.
    public var terminationGracePeriod: Duration = .seconds(3)
    /// How long a worker of a statically linked build may wait for `ProcessPoolWorker.bootstrap()`.
    public var bootstrapTimeout: Duration = .seconds(10)

    /// The program a worker runs: this executable. Internal: tests point it at a program that
    /// dies at once to exercise the respawn-storm limit.
    var workerExecutable = WorkerSpawner.selfExecutable

    /// The defaults.
    public init() {}

    func validate() throws(ProcessPoolError) {
      guard maxWorkers > 0 else {
        throw ProcessPoolError(.invalidArgument, "maxWorkers must be greater than 0 (got \(maxWorkers))")
      }
      if let maxTasksPerChild, maxTasksPerChild < 1 {
        throw ProcessPoolError(.invalidArgument, "maxTasksPerChild must be at least 1 (got \(maxTasksPerChild))")
      }
      if let taskTimeout, taskTimeout <= .zero {
        throw ProcessPoolError(.invalidArgument, "taskTimeout must be positive (got \(taskTimeout))")
      }
      guard jobsPerWorker >= 1 else {
        throw ProcessPoolError(.invalidArgument, "jobsPerWorker must be at least 1 (got \(jobsPerWorker))")
      }
    }
  }

  /// A snapshot of what the pool has done and is doing.
  public struct Statistics: Sendable, Hashable, Codable {
    /// Worker processes alive now.
    public var workersAlive = 0
    /// Workers running a task now.
    public var workersBusy = 0
    /// Worker processes started since the pool was created.
    public var workersStarted = 0
    /// Workers that died unexpectedly (each was replaced, or broke the pool).
    public var workersCrashed = 0
    /// Workers retired at `maxTasksPerChild`.
    public var workersRetired = 0
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
