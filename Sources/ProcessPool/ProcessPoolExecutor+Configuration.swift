import CProcessPoolShims

extension ProcessPoolExecutor {
  /// What a worker crash does to the rest of the pool.
  public enum CrashPolicy: Sendable, Hashable {
    /// Fail the task the worker was running, start a new worker, go on (pebble's behaviour).
    case replaceWorker
    /// Break the pool as CPython does: every pending task fails, later submits throw.
    case breakPool
  }

  /// Where what a worker writes to its stderr goes (its `print`s go to stdout, shared with the
  /// parent).
  public enum WorkerStandardError: Sendable, Hashable {
    /// The default: the pool reads it and writes it to this process's stderr a whole line at a
    /// time, each line prefixed with the worker's pid (`[worker 1234] …`), so lines of several
    /// workers never mix. Its tail is kept for crash reports.
    case forward
    /// The pool reads it and keeps only its tail, for crash reports: nothing is printed.
    case capture
    /// The worker writes to this process's stderr directly, as any child would; there are no
    /// crash reports.
    case inherit
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
    /// Replace a worker after it has run this many tasks (a `map` chunk counts as one). When
    /// there is more work, the replacement starts as soon as the worker is given its last task
    /// and stands by until that task is done, so its start-up overlaps the task: no more than
    /// `maxWorkers` workers run tasks, but a standby and a retired worker that is still exiting
    /// may be alive besides each (and be listed in ``ProcessPoolExecutor/workerPIDs``).
    public var maxTasksPerChild: Int?
    /// Default per-task time limit; past it the task fails with
    /// ``ProcessPoolError/Code/taskTimedOut`` and its worker is stopped and replaced. Must be
    /// positive; limits beyond about 68 years (`.seconds(Int64.max)`) mean no limit.
    public var taskTimeout: Duration?
    /// What a worker crash does to the pool.
    public var crashPolicy: CrashPolicy = .replaceWorker
    /// Tasks handed to one worker at a time: the running one plus those queued on its socket.
    /// More hides the round trip for tiny tasks; 1 keeps every pending task cancellable.
    public var jobsPerWorker: Int = 2
    /// While a worker's tasks each finish within about 100 µs, hand it up to 64 tasks at a time
    /// instead of `jobsPerWorker`, and up to 256 while their results come back at least every
    /// 20 µs on average, so tiny tasks do not wait on round trips (at most a few milliseconds
    /// of work per worker; those tasks count as running and cannot be cancelled).
    /// Has no effect when `jobsPerWorker` is 1.
    public var adaptivePipelining = true
    /// What cancelling the Swift task that awaits a future's ``ProcessFuture/value``, or
    /// ending a map's iteration early, does to work already running: by default it is left to
    /// finish; ``CancellationMode/terminatingWorker`` stops it (the worker is replaced).
    public var cancellation: CancellationMode = .pendingOnly
    /// How long a worker stopped by SIGTERM (timeout, `terminateWorkers`) has before SIGKILL.
    /// Must be positive; periods beyond about 68 years mean SIGKILL is never sent.
    public var terminationGracePeriod: Duration = .seconds(3)
    /// Where workers' stderr goes; a worker that dies has the tail of it attached to the error
    /// (``ProcessPoolError/crashReport``) unless it is ``WorkerStandardError/inherit``.
    public var workerStandardError: WorkerStandardError = .forward
    /// Whether a local worker that crashes prints the Swift runtime's full backtrace. Off by
    /// default: the backtracer makes every crash about ten times slower and floods the report;
    /// the message of a `fatalError` or `precondition` is printed either way. A
    /// `SWIFT_BACKTRACE` variable in this process's environment is passed on unchanged and wins.
    public var workerBacktraces = false
    /// How long a worker started by a launcher (`ssh`, `srun`, a command) may take to say hello
    /// (default: 60 seconds; nil: no limit). Past it the worker's process group is stopped and
    /// it counts as a failed start: three in a row give its launcher up, with an error that
    /// says what to check (a launcher that buffers the worker's output never delivers the
    /// hello). Raise it for jobs that may wait in a busy queue.
    public var launchTimeout: Duration? = .seconds(60)
    /// Unused: a worker of a statically linked build no longer waits for
    /// `ProcessPoolWorker.bootstrap()`. Kept so that code setting it still compiles.
    @available(*, deprecated, message: "workers no longer wait for ProcessPoolWorker.bootstrap()")
    public var bootstrapTimeout: Duration {
      get { .seconds(10) }
      set {}
    }

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
      guard terminationGracePeriod > .zero else {
        throw ProcessPoolError(
          .invalidArgument, "terminationGracePeriod must be positive (got \(terminationGracePeriod))")
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
    /// Jobs waiting for a worker (not counting cancelled ones, such as those of a map whose
    /// iteration ended early).
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
