/// The parent's view of one worker process. Lives in `PoolState.workers`.
struct WorkerSlot {
  /// Where a worker is in its life. Each case holds the facts that only it has, so no
  /// impossible combination (a stop reason on a ready worker, a hello deadline after the hello)
  /// can be stored.
  enum Phase: Equatable {
    /// Spawned; its hello has not arrived (a local worker may already have work queued on its
    /// socket). `initializer`: it runs one after its hello. A launched worker not heard from by
    /// `launchDeadline` is stopped (`Configuration.launchTimeout`).
    case starting(initializer: Bool, launchDeadline: MonotonicInstant?)
    /// Said hello and runs its initializer: it is given work only once that succeeded.
    case initializing
    /// Said hello (and initialized): runs work.
    case ready
    /// Sent `stop` (retired, or the pool shuts down); will exit when it has read it. A death
    /// before it had started (`from` is not `.ready`) is a failed start.
    case retiring(from: Startup)
    /// Being stopped by signal (timeout, forced shutdown, protocol violation, a broken pool);
    /// `reason` goes to the job it was running; SIGKILL at `killAt`.
    case terminating(reason: ProcessPoolError, killAt: MonotonicInstant?)
    /// Its socket reached end of stream; waiting to be reaped and removed.
    case exited
  }

  /// How far a retiring worker had started when it was told to stop.
  enum Startup: Equatable {
    /// Its hello had not arrived; `initializer`: it runs one after its hello.
    case beforeHello(initializer: Bool)
    /// It had said hello; its initializer was running.
    case initializing
    /// It was ready.
    case ready
  }

  let id: Int
  /// Index of the launcher that started it, in `PoolState.launchers`.
  let launcher: Int
  /// The local process: the worker itself, or its launcher (`ssh`, …).
  let pid: Int32
  /// Whether a launcher command started it (then it runs in its own process group).
  let launched: Bool
  /// When it was spawned (for `Statistics.timeStartingWorkers`).
  let spawnedAt: MonotonicInstant
  /// Whether it has regions of memory shared with the parent for large values (a local worker
  /// whose regions could be mapped): a job too big for its socket can still go to it.
  let sharesMemory: Bool
  var phase: Phase
  /// Retired at its task limit and already replaced: it no longer counts toward its launcher's
  /// workers while it drains and exits (`PoolState.launcherReplaced`).
  var replaced = false
  /// Holds its last job at its task limit and is not replaced yet (`PoolState.launcherFinishing`).
  var finishing = false
  /// Started early, as a replacement for a finishing worker: takes no job until its launcher has
  /// room for one more worker running jobs (`PoolState.standbys`).
  var standby = false
  /// Jobs sent and not answered, oldest first; the first one is running.
  var inflight: InflightJobs = []
  var jobsAssigned = 0
  /// `stop` was written to it (behind its last job, or once idle): it exits after what it holds.
  var stopSent = false
  /// The inflight count under which it is listed in `PoolState.available`, if it is.
  var listedAt: Int?
  /// When the running job's per-task timeout ends (set once the worker has said hello).
  var headDeadline: MonotonicInstant?
  /// When the head job started (was sent to an idle worker, or the result before it arrived).
  var headStartedAt: MonotonicInstant?
  /// Jobs in a row that finished within `fastJob`: the pool pipelines deeper onto such a worker.
  var fastStreak = 0
  /// When the current window of results began (its first result), and how many came since.
  var windowStart: MonotonicInstant?
  var windowResults = 0
  /// The depth for fast jobs, from the pace of the last whole window of results (see
  /// `fastPipelineDepth(window:)`).
  var paceDepth = fastPipelineDepth

  /// A job this short gains much from being queued on the worker ahead of time.
  static let fastJob = Duration.microseconds(100)
  /// How many fast jobs in a row before the deeper pipeline is used.
  static let fastStreakNeeded = 8
  /// The deeper pipeline's depth.
  static let fastPipelineDepth = 64
  /// Results a worker's pace is measured over (see `paceDepth`).
  static let windowLength = 64
  /// The work a fast worker is given ahead, by its pace: jobs whose results come back every few
  /// microseconds would keep it busy for less than two wake-ups take on a busy machine with
  /// `fastPipelineDepth` of them, so it would run dry and sleep between top-ups.
  static let paceBudget = Duration.microseconds(640)
  /// The most jobs a fast worker holds.
  static let deepestPipeline = 256

  /// The fast depth for a worker whose last `windowLength` results took `window` (idle time
  /// included): about `paceBudget` of work, between `fastPipelineDepth` and `deepestPipeline`.
  static func fastPipelineDepth(window: Duration) -> Int {
    let (seconds, attoseconds) = window.components
    guard seconds == 0 else { return fastPipelineDepth }
    let nanoseconds = max(attoseconds / 1_000_000_000, 1)
    let budget = paceBudget.components.attoseconds / 1_000_000_000 * Int64(windowLength)
    return Int(min(max(budget / nanoseconds, Int64(fastPipelineDepth)), Int64(deepestPipeline)))
  }

  /// How many jobs it may hold now.
  func pipelineDepth(_ configuration: ProcessPoolExecutor.Configuration) -> Int {
    let depth = configuration.jobsPerWorker
    guard configuration.adaptivePipelining, depth > 1, fastStreak >= Self.fastStreakNeeded else { return depth }
    return max(depth, paceDepth)
  }

  /// The head job is done at `now`: learn whether it was fast, and the worker's pace; the next
  /// one (already on the worker's socket) starts now. `fastWithin` is `fastJob` stretched by how many workers share each processor: a short
  /// job's time as seen from here includes its worker's wait for a processor.
  mutating func headFinished(at now: MonotonicInstant, fastWithin: Duration = fastJob) {
    if let started = headStartedAt, started.duration(to: now) <= fastWithin {
      fastStreak = min(fastStreak + 1, Self.fastStreakNeeded)
    } else {
      fastStreak = 0
      paceDepth = Self.fastPipelineDepth
    }
    headStartedAt = inflight.isEmpty ? nil : now
    // The pace over a window of results, not each job's own time: a job's result is seen in a
    // burst with others, so one job's time here is mostly how long the burst took to come.
    windowResults += 1
    if let start = windowStart {
      guard windowResults >= Self.windowLength else { return }
      paceDepth =
        fastStreak < Self.fastStreakNeeded
        ? Self.fastPipelineDepth : Self.fastPipelineDepth(window: start.duration(to: now))
    }
    windowStart = now
    windowResults = 0
  }

  init(
    id: Int, launcher: Int, launched: Bool, pid: Int32, spawnedAt: MonotonicInstant, sharesMemory: Bool = false,
    phase: Phase = .starting(initializer: false, launchDeadline: nil)
  ) {
    self.sharesMemory = sharesMemory
    self.phase = phase
    self.id = id
    self.spawnedAt = spawnedAt
    self.launcher = launcher
    self.launched = launched
    self.pid = pid
  }

  var isIdle: Bool { inflight.isEmpty }

  /// What signals go to: the worker, or a launcher's whole process group (a pipeline such as
  /// `sh -c 'app | filter'` must stop as a whole, or its other members would keep the socket).
  var signalTarget: Int32 { launched ? -pid : pid }

  /// `signal` for this worker, as an effect (the runtime sends it through the worker's pidfd
  /// when it has one).
  func signalling(_ signal: Int32) -> PoolEffects.Signal {
    PoolEffects.Signal(worker: id, pid: signalTarget, signal: signal)
  }

  /// Whether it may be given work now.
  func accepts(maxTasksPerChild: Int?) -> Bool {
    if standby { return false }
    switch phase {
    // A local worker's hello is on its socket before anything it runs, so work written to it
    // early is requeued safely if it dies unheard. A launched worker's hello can be lost in
    // the launcher (ssh killed) after a job ran: it gets work only once its hello arrived.
    // No task before the initializer has succeeded: one that dies there is a failed start.
    case .starting(let initializer, _): if launched || initializer { return false }
    case .ready: break
    case .initializing, .retiring, .terminating, .exited: return false
    }
    if let maxTasksPerChild, jobsAssigned >= maxTasksPerChild { return false }
    return true
  }
}
