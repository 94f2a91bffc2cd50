/// The whole state of a pool: the queue, the workers, the lifecycle. Kept under one `Mutex` in
/// `PoolCore` and changed only through the transitions in `PoolState+*.swift`, each of which
/// records in `PoolEffects` what must happen once the lock is released (writes, spawns, signals,
/// futures to finish): no user code and no blocking system call runs under the lock.
struct PoolState: ~Copyable {
  enum Lifecycle: Equatable {
    case running
    /// No new work; queued work still runs, then workers are stopped.
    case shuttingDown
    /// No new work; every job failed with `brokenReason`.
    case broken
    /// Every worker reaped; nothing runs.
    case stopped
  }

  let configuration: ProcessPoolExecutor.Configuration
  /// The processors this process may run on: how many workers run at once.
  let processors: Int
  var lifecycle: Lifecycle = .running
  /// Set by `terminateWorkers`/`killWorkers`: workers are not replaced and running work fails.
  var forced = false
  /// Why the pool broke (set once, with `.broken`), kept after it is stopped so later submits
  /// can say so.
  var brokenReason: ProcessPoolError?
  var queue = JobQueue()
  /// Lazy inputs still to pull from, oldest first (`PoolState+Sources.swift`).
  var sources: [any JobSource] = []
  /// Whether the feeder thread runs, and whether it sleeps (the queue was full enough).
  var feederRunning = false
  var feederSleeping = false
  /// The first source was asked for a batch that it hands over later (its input is pulled on
  /// its map's actor): the feeder sleeps until it does.
  var feederAwaitsSource = false
  var workers: [WorkerSlot] = []
  /// How workers start (`configuration.effectiveLaunchers`), and per launcher: workers being
  /// spawned right now, workers in a row that died before saying hello, and whether it was given
  /// up (too many of those).
  let launchers: [WorkerLauncher]
  var launcherSpawning: [Int]
  var launcherStartFailures: [Int]
  var launcherGivenUp: [Bool]
  /// Workers being spawned right now, over all launchers (counted against the capacity).
  var spawning: Int { launcherSpawning.reduce(0, +) }
  /// The instant of the event being handled. Every event method takes it as an argument and the
  /// transitions it runs use it: the state reads no clock, so tests choose the time.
  var now = MonotonicInstant(sinceOrigin: .zero)
  /// Spawns the I/O thread is to make (launcher indices, already counted in `spawning`).
  var pendingSpawns: [Int] = []
  /// Spawning waits until then: the system ran out of descriptors or processes.
  var spawnRetryAt: MonotonicInstant?
  var nextJobID: UInt64 = 1
  /// Where each worker is in `workers`, by id (a result is handled in constant time, whatever
  /// the number of workers).
  private(set) var slotIndex: [Int: Int] = [:]
  /// Workers that may take a job, by how many they hold (dispatch never scans every worker).
  var available = WorkerAvailability()
  /// Workers alive per launcher (a retiring one too).
  var launcherAlive: [Int]
  /// Of those, workers retired at their task limit (`stop` sent, no work held): they no longer
  /// count toward the launcher's workers, so their replacements start while they exit.
  var launcherReplaced: [Int]
  /// Of those, workers given their last job at their task limit (`stop` sent behind it) and not
  /// yet replaced: a replacement for each starts while that job runs, as a standby.
  var launcherFinishing: [Int]
  /// Per launcher, workers that arrived while as many of its workers as it allows could run jobs
  /// (ids, oldest first): each takes no job until one of those retires or is gone, so a standby
  /// is ready when a worker retires and no more workers than allowed ever run jobs.
  var standbys: [[Int]]
  /// Whether any launcher starts workers by a command (only those wait for a hello to get work).
  let anyLaunched: Bool
  /// Whether the I/O thread runs (it is started with the first worker and ends when stopped).
  var ioThreadRunning = false
  var statistics = ProcessPoolExecutor.Statistics()

  init(configuration: ProcessPoolExecutor.Configuration, processors: Int = 1) {
    self.configuration = configuration
    self.processors = max(1, processors)
    launchers = configuration.effectiveLaunchers
    launcherSpawning = Array(repeating: 0, count: launchers.count)
    launcherAlive = launcherSpawning
    launcherReplaced = launcherSpawning
    launcherFinishing = launcherSpawning
    standbys = Array(repeating: [], count: launchers.count)
    anyLaunched = launchers.contains { $0.arguments != nil }
    launcherStartFailures = launcherSpawning
    launcherGivenUp = Array(repeating: false, count: launchers.count)
  }

  func index(ofWorker id: Int) -> Int? {
    slotIndex[id]
  }

  /// A new worker joins, last: a standby if as many of its launcher's workers as it allows can
  /// run jobs already (only a replacement started early finds them so).
  mutating func addSlot(_ slot: WorkerSlot) {
    var slot = slot
    let launcher = slot.launcher
    if launcherAlive[launcher] - launcherReplaced[launcher] - standbys[launcher].count >= launchers[launcher].workers {
      slot.standby = true
      standbys[launcher].append(slot.id)
    }
    slotIndex[slot.id] = workers.count
    launcherAlive[launcher] += 1
    workers.append(slot)
  }

  /// A worker leaves for good; a standby of its launcher takes its place if it could run jobs.
  mutating func removeSlot(at index: Int) -> WorkerSlot {
    let slot = workers.remove(at: index)
    slotIndex[slot.id] = nil
    launcherAlive[slot.launcher] -= 1
    if slot.replaced { launcherReplaced[slot.launcher] -= 1 }
    if slot.finishing { launcherFinishing[slot.launcher] -= 1 }
    for later in index..<workers.count { slotIndex[workers[later].id] = later }
    if slot.standby {
      standbys[slot.launcher].removeAll { $0 == slot.id }
    } else if !slot.replaced {
      promoteStandby(of: slot.launcher)
    }
    return slot
  }

  /// A worker of `launcher` that could run jobs no longer can: its oldest standby may now.
  mutating func promoteStandby(of launcher: Int) {
    guard !standbys[launcher].isEmpty else { return }
    let id = standbys[launcher].removeFirst()
    guard let index = slotIndex[id] else { return }
    workers[index].standby = false
    listIfAvailable(index)
  }

  /// The counters now, with the gauges (workers alive, busy and idle, tasks queued and running)
  /// read off the state.
  var statisticsSnapshot: ProcessPoolExecutor.Statistics {
    var snapshot = statistics
    snapshot.workersAlive = workers.count
    snapshot.workersBusy = workers.filter { !$0.isIdle }.count
    snapshot.workersIdle = workers.filter { $0.isIdle && ($0.phase == .ready || $0.phase == .initializing) }.count
    // Work that was cancelled (a map left early) no longer counts, though it waits in the
    // queue until its turn comes to be skipped.
    snapshot.tasksQueued = queue.liveCount
    snapshot.tasksRunning = workers.reduce(0) { $0 + $1.inflight.count }
    return snapshot
  }

  /// The pids of the workers alive.
  var workerPIDs: [Int32] { workers.map(\.pid) }

  /// The error a submit gets when the pool takes no more work, or nil when it does.
  var rejection: ProcessPoolError? {
    switch lifecycle {
    case .running: return nil
    case .shuttingDown, .broken, .stopped:
      if let brokenReason { return brokenReason }
      return ProcessPoolError(.shutDown, "cannot schedule new work after shutdown")
    }
  }
}

/// A FIFO of jobs that pops from the front without shifting the array. A map's batch of chunks
/// is one entry, counted as its chunks: each chunk's job is made when it is popped. A popped
/// entry lets go of its job or batch at once: a finished job is freed when its result is
/// delivered (its memory still in the cache), not thousands at a time under the pool's lock when
/// the array is compacted.
struct JobQueue {
  private enum Entry {
    case job(Job)
    /// A batch and its next chunk to pop.
    case batch(any JobBatch, next: Int)
    /// Popped: before `head` only.
    case taken
  }
  private var items: [Entry] = []
  private var head = 0
  /// The jobs queued, a batch's chunks included.
  private(set) var count = 0

  var isEmpty: Bool { count == 0 }

  mutating func append(_ job: Job) {
    items.append(.job(job))
    count += 1
  }

  /// Queues a batch's chunks, in order.
  mutating func append(_ batch: any JobBatch) {
    guard batch.jobCount > 0 else { return }
    items.append(.batch(batch, next: 0))
    count += batch.jobCount
  }

  /// The next job; nil when the queue is empty. A batch's chunks that need no worker (cancelled
  /// ones) are skipped without a job.
  mutating func popFirst() -> Job? {
    while head < items.count {
      switch items[head] {
      case .job(let job):
        count -= 1
        advanceHead()
        return job
      case .batch(let batch, let next):
        count -= 1
        if next + 1 == batch.jobCount {
          advanceHead()
        } else {
          items[head] = .batch(batch, next: next + 1)
        }
        if let job = batch.job(at: next) { return job }
      case .taken:
        preconditionFailure("a popped entry at the queue's head")
      }
    }
    return nil
  }

  private mutating func advanceHead() {
    items[head] = .taken
    head += 1
    if head == items.count || head > 4096 && head * 2 > items.count {
      items.removeSubrange(0..<head)
      head = 0
    }
  }

  /// Puts jobs back at the front, in order (work a dead worker had not started).
  mutating func prepend(_ jobs: some Collection<Job>) {
    guard !jobs.isEmpty else { return }
    items.replaceSubrange(0..<head, with: jobs.map { .job($0) })
    head = 0
    count += jobs.count
  }

  /// How many jobs are not cancelled (cancelled ones wait to be skipped when their turn comes).
  var liveCount: Int {
    items[head...].reduce(0) { total, entry in
      switch entry {
      case .job(let job): return total + (job.sink.isCancelled ? 0 : 1)
      case .batch(let batch, let next): return total + batch.liveCount(from: next)
      case .taken: return total
      }
    }
  }

  /// Empties the queue; returns the sinks of what was in it (a batch's remaining chunks as one).
  mutating func removeAll() -> [any JobSink] {
    let all = items[head...].map { entry -> any JobSink in
      switch entry {
      case .job(let job): return job.sink
      case .batch(let batch, let next): return batch.remainder(from: next)
      case .taken: preconditionFailure("a popped entry after the queue's head")
      }
    }
    items = []
    head = 0
    count = 0
    return all
  }
}
