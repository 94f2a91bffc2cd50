/// The parent's view of one worker process. Lives in `PoolState.workers`.
struct WorkerSlot {
  enum Phase: Equatable {
    /// Spawned; its hello has not arrived (work may already be queued on its socket).
    case starting
    /// Said hello: running work.
    case ready
    /// Sent `stop` (retired, or the pool shuts down); will exit when it has read it.
    case retiring
    /// Being stopped by signal (timeout, forced shutdown, protocol violation); SIGKILL at `killAt`.
    case terminating(killAt: MonotonicInstant?)
    /// Its socket reached end of stream; waiting to be reaped and removed.
    case exited
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
  /// The pid the worker reported in its hello (on its own host, for a launched worker).
  var remotePID: Int32?
  let socket: Socket
  /// Where a local worker's replies come (nil for a launched worker: all on the socket).
  let ring: ReplyRing?
  /// A pidfd of `pid`: readable once it exited (nil where the kernel has none).
  let pidfd: Socket?
  /// The read end of its stderr, read by the I/O thread (nil when inherited).
  let standardError: Socket?
  var phase: Phase = .starting
  /// Jobs sent and not answered, oldest first; the first one is running.
  var inflight: [Job] = []
  var jobsAssigned = 0
  var saidHello = false
  var initializing = false
  /// Bytes not yet written, from `outOffset` on; a thread that sets `flushing` owns the writing.
  var out: [UInt8] = []
  var outOffset = 0
  var flushing = false
  var wantsWrite = false
  /// When the running job's per-task timeout ends (set once the worker has said hello).
  var headDeadline: MonotonicInstant?
  /// When a launched worker that has not said hello is stopped (`Configuration.launchTimeout`).
  var launchDeadline: MonotonicInstant?
  /// Why the pool is stopping this worker, reported to the job it was running, if any.
  var stopReason: ProcessPoolError?
  /// When the head job started (was sent to an idle worker, or the result before it arrived).
  var headStartedAt: MonotonicInstant?
  /// Jobs in a row that finished within `fastJob`: the pool pipelines deeper onto such a worker.
  var fastStreak = 0

  /// A job this short gains much from being queued on the worker ahead of time.
  static let fastJob = Duration.microseconds(100)
  /// How many fast jobs in a row before the deeper pipeline is used.
  static let fastStreakNeeded = 8
  /// The deeper pipeline's depth.
  static let fastPipelineDepth = 32

  /// How many jobs it may hold now.
  func pipelineDepth(_ configuration: ProcessPoolExecutor.Configuration) -> Int {
    let depth = configuration.jobsPerWorker
    guard configuration.adaptivePipelining, depth > 1, fastStreak >= Self.fastStreakNeeded else { return depth }
    return max(depth, Self.fastPipelineDepth)
  }

  /// The head job is done at `now`: learn whether it was fast; the next one (already on the
  /// worker's socket) starts now.
  mutating func headFinished(at now: MonotonicInstant) {
    if let started = headStartedAt, started.duration(to: now) <= Self.fastJob {
      fastStreak = min(fastStreak + 1, Self.fastStreakNeeded)
    } else {
      fastStreak = 0
    }
    headStartedAt = inflight.isEmpty ? nil : now
  }

  init(
    id: Int, launcher: Int, launched: Bool, pid: Int32, socket: Socket, ring: ReplyRing? = nil,
    pidfd: Socket? = nil, standardError: Socket? = nil, spawnedAt: MonotonicInstant
  ) {
    self.pidfd = pidfd
    self.standardError = standardError
    self.id = id
    self.spawnedAt = spawnedAt
    self.launcher = launcher
    self.launched = launched
    self.pid = pid
    self.socket = socket
    self.ring = ring
  }

  var isIdle: Bool { inflight.isEmpty }

  /// What signals go to: the worker, or a launcher's whole process group (a pipeline such as
  /// `sh -c 'app | filter'` must stop as a whole, or its other members would keep the socket).
  var signalTarget: Int32 { launched ? -pid : pid }

  /// `signal` for this worker, as an effect: a local worker through its pidfd, a launcher's
  /// process group by its id.
  func signalling(_ signal: Int32) -> PoolEffects.Signal {
    PoolEffects.Signal(pid: signalTarget, pidfd: launched ? nil : pidfd, signal: signal)
  }

  /// Whether it may be given work now.
  func accepts(maxTasksPerChild: Int?) -> Bool {
    // No task before the initializer has succeeded: one that dies there is a failed start.
    if initializing { return false }
    switch phase {
    // A local worker's hello is on its socket before anything it runs, so work written to it
    // early is requeued safely if it dies unheard. A launched worker's hello can be lost in
    // the launcher (ssh killed) after a job ran: it gets work only once its hello arrived.
    case .starting: if launched { return false }
    case .ready: break
    default: return false
    }
    if let maxTasksPerChild, jobsAssigned >= maxTasksPerChild { return false }
    return true
  }

  /// Appends a frame; returns true when the caller must now flush (it took the writer role).
  mutating func enqueue(_ kind: Frame.Kind, id: UInt64, payload: [UInt8]) -> Bool {
    let start = Frame.begin(kind, id: id, into: &out)
    out.append(contentsOf: payload)
    Frame.finish(at: start, in: &out)
    return takeWriterRole()
  }

  /// Appends a job's `run` frame. Into an empty buffer the frame is shared, not copied.
  mutating func enqueue(_ job: Job) -> Bool {
    Frame.fillHeader(.run, id: job.id, in: &job.frame)
    if let shared = sharedRunFrame(for: job) {
      out.append(contentsOf: shared)
    } else if out.isEmpty {
      out = job.frame
    } else {
      out.append(contentsOf: job.frame)
    }
    return takeWriterRole()
  }

  private mutating func takeWriterRole() -> Bool {
    if flushing || wantsWrite { return false }
    flushing = true
    return true
  }
}
