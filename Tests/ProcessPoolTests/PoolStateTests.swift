import Synchronization
import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// The pool's rules on its state alone: no worker process, no I/O thread, no sleep. Each test
/// drives `PoolState` through the events the I/O thread would report (spawned, hello, results,
/// exited, deadlines) with instants it chooses, and checks the effects the state asks for
/// (spawns, signals, futures failed or cancelled) without carrying them out.
@Suite struct PoolStateTests {
  /// The futures of a job, as the state sees them: records what is done to them.
  final class RecordingSink: JobSink {
    private let record = Mutex<(starts: Int, failures: [ProcessPoolError], cancelled: Bool, delivered: Int)>(
      (0, [], false, 0))

    func start() -> Bool {
      record.withLock {
        $0.starts += 1
        return !$0.cancelled
      }
    }
    func deliver(_ payload: UnsafeRawBufferPointer, workerPID: Int32) { record.withLock { $0.delivered += 1 } }
    func fail(_ error: ProcessPoolError) { record.withLock { $0.failures.append(error) } }
    func cancelAll() { record.withLock { $0.cancelled = true } }
    func acknowledgeCancel() {}
    func contains(_ future: ObjectIdentifier, chunk: Int) -> Bool { future == ObjectIdentifier(self) }
    var isCancelled: Bool { record.withLock { $0.cancelled } }
    var failureCount: Int { record.withLock { $0.failures.count } }
  }

  /// A pool state and the events to drive it, with every effect asked for kept in `effects`.
  final class Machine {
    var state: PoolState
    /// The effects of the last event.
    var effects = PoolEffects()
    private var nextPID: Int32 = 1000

    init(_ configure: (inout ProcessPoolExecutor.Configuration) -> Void = { _ in }) {
      var configuration = ProcessPoolExecutor.Configuration()
      configuration.maxWorkers = 1
      configure(&configuration)
      state = PoolState(configuration: configuration)
    }

    @discardableResult
    func event<T>(_ body: (inout PoolState, inout PoolEffects) -> T) -> T {
      effects = PoolEffects()
      return body(&state, &effects)
    }

    /// Submits `count` jobs; returns their sinks.
    func submit(_ count: Int, timeout: Duration? = nil) -> [(Job, RecordingSink)] {
      let jobs = (0..<count).map { _ -> (Job, RecordingSink) in
        let sink = RecordingSink()
        return (Job(frame: Frame.emptyHeader, sink: sink, timeout: timeout), sink)
      }
      let rejection = event { state, effects in state.submit(jobs.map(\.0), now: .now, &effects) }
      #expect(rejection == nil)
      return jobs
    }

    /// Submits a map's batch of chunks.
    func submit(_ batch: any JobBatch) {
      let rejection = event { state, effects in state.submit(batch, now: .now, &effects) }
      #expect(rejection == nil)
    }

    /// A worker of `launcher` was spawned (as the I/O thread reports it); returns its id and pid.
    func spawned(launcher: Int = 0, initializer: [UInt8]? = nil) throws -> (id: Int, pid: Int32) {
      nextPID += 1
      let id = Int(nextPID)
      event { state, effects in
        state.workerSpawned(
          worker: id, launcher: launcher, pid: nextPID, spawnedAt: .now, initializer: initializer, &effects)
      }
      return (id, nextPID)
    }

    func hello(_ worker: (id: Int, pid: Int32)) {
      event { state, effects in
        state.hello(worker: worker.id, version: Frame.protocolVersion, pid: worker.pid, now: .now, &effects)
      }
    }

    /// The result of the job the worker runs arrives; returns that job.
    @discardableResult
    func result(_ worker: (id: Int, pid: Int32)) -> Job? {
      let head = slot(worker)?.inflight.first
      // As the I/O thread does: one dispatch pass after a batch of results.
      return event { state, effects in
        defer { state.advance(&effects) }
        return state.resultArrived(worker: worker.id, requestID: head?.id ?? 0, now: .now, &effects)?.0
      }
    }

    func exited(_ worker: (id: Int, pid: Int32), _ termination: ProcessPoolError.Termination?) {
      let phase = slot(worker)?.phase ?? .exited
      event { state, effects in
        state.workerExited(worker: worker.id, phase: phase, termination: termination, now: .now, &effects)
      }
    }

    @discardableResult
    func deadlines(at now: MonotonicInstant) -> MonotonicInstant? {
      event { state, effects in state.checkDeadlines(now: now, &effects) }
    }

    func slot(_ worker: (id: Int, pid: Int32)) -> WorkerSlot? {
      state.index(ofWorker: worker.id).map { state.workers[$0] }
    }

    func running(_ worker: (id: Int, pid: Int32)) -> [ObjectIdentifier] {
      slot(worker)?.inflight.map { ObjectIdentifier($0) } ?? []
    }

    var queued: Int { state.queue.count }
    var lifecycle: PoolState.Lifecycle { state.lifecycle }

    func failures(of sink: RecordingSink) -> [ProcessPoolError.Code] {
      effects.failures.filter { ($0.0 as? RecordingSink) === sink }.map(\.1.code)
    }

    func signals(_ worker: (id: Int, pid: Int32)) -> [Int32] {
      effects.signals.filter { $0.pid == worker.pid || $0.pid == -worker.pid }.map(\.signal)
    }
  }

  // MARK: Crashes with work in flight

  @Test func underReplaceWorkerACrashFailsOnlyTheRunningJobAndRequeuesTheRest() throws {
    let machine = Machine { $0.jobsPerWorker = 2 }
    let jobs = machine.submit(3)
    #expect(machine.effects.spawns == [0])
    let worker = try machine.spawned()
    machine.hello(worker)
    #expect(machine.running(worker) == jobs[0...1].map { ObjectIdentifier($0.0) })
    #expect(machine.queued == 1)
    machine.exited(worker, .signaled(SIGSEGV))
    #expect(machine.failures(of: jobs[0].1) == [.workerCrashed])
    #expect(machine.effects.failures.count == 1)
    #expect(machine.queued == 2)  // the second job provably never ran on it, the third waited
    #expect(machine.effects.spawns == [0])  // a replacement
    #expect(machine.lifecycle == .running)
    #expect(machine.state.statistics.workersCrashed == 1)
  }

  @Test func underBreakPoolACrashFailsTheRunningJobAndBreaksThePoolForTheRest() throws {
    let machine = Machine {
      $0.jobsPerWorker = 2
      $0.crashPolicy = .breakPool
    }
    let jobs = machine.submit(3)
    let worker = try machine.spawned()
    machine.hello(worker)
    machine.exited(worker, .exited(9))
    #expect(machine.failures(of: jobs[0].1) == [.workerCrashed])
    #expect(machine.failures(of: jobs[1].1) == [.brokenPool])
    #expect(machine.failures(of: jobs[2].1) == [.brokenPool])
    #expect(machine.effects.spawns.isEmpty)
    #expect(machine.state.rejection?.code == .brokenPool)
  }

  @Test func underBreakPoolAnIdleWorkerDyingBreaksThePoolToo() throws {
    let machine = Machine { $0.crashPolicy = .breakPool }
    _ = machine.submit(1)
    let worker = try machine.spawned()
    machine.hello(worker)
    machine.result(worker)
    machine.exited(worker, .signaled(SIGKILL))
    #expect(machine.state.rejection?.code == .brokenPool)
  }

  // MARK: Deaths while starting and stopping

  @Test func aWorkerDyingBeforeItsHelloRequeuesItsJobsUnderReplaceWorker() throws {
    let machine = Machine { $0.jobsPerWorker = 2 }
    let jobs = machine.submit(2)
    let worker = try machine.spawned()
    #expect(machine.running(worker).count == 2)  // a local worker is written to before its hello
    machine.exited(worker, .signaled(SIGKILL))
    #expect(machine.effects.failures.isEmpty)  // nothing had started: the hello comes first
    #expect(machine.queued == 2)
    #expect(machine.effects.spawns == [0])
    #expect(machine.state.statistics.workersFailedToStart == 1)
    _ = jobs
  }

  @Test func aWorkerDyingBeforeItsHelloBreaksThePoolUnderBreakPool() throws {
    let machine = Machine { $0.crashPolicy = .breakPool }
    let jobs = machine.submit(1)
    let worker = try machine.spawned()
    machine.exited(worker, .signaled(SIGKILL))
    #expect(machine.failures(of: jobs[0].1) == [.brokenPool])
    #expect(machine.state.rejection?.code == .brokenPool)
  }

  @Test func aWorkerIsGivenNoJobBeforeItsInitializerSucceeded() throws {
    let machine = Machine()
    _ = machine.submit(1)
    let worker = try machine.spawned(initializer: [1, 2, 3])
    machine.hello(worker)
    #expect(machine.running(worker).isEmpty)
    machine.event { state, effects in state.initialized(worker: worker.id, failure: nil, now: .now, &effects) }
    #expect(machine.running(worker).count == 1)
  }

  @Test func threeWorkersDyingInTheirInitializerBreakThePoolAndNoJobIsBlamed() throws {
    let machine = Machine()
    let jobs = machine.submit(2)
    for attempt in 1...3 {
      #expect(machine.effects.spawns == [0], "attempt \(attempt)")
      let worker = try machine.spawned(initializer: [1])
      machine.hello(worker)
      machine.exited(worker, .exited(3))
    }
    #expect(machine.state.statistics.workersFailedToStart == 3)
    #expect(machine.failures(of: jobs[0].1) == [.brokenPool])
    #expect(machine.effects.failures.allSatisfy { $0.1.message.contains("exit code 3") })
    #expect(machine.state.rejection?.code == .brokenPool)
  }

  @Test func threeFailedStartsGiveALauncherUpWhileAnotherGoesOn() throws {
    let machine = Machine {
      $0.launchers = [.command(["/bin/false"], workers: 1), .local(workers: 1)]
    }
    _ = machine.submit(1)
    for _ in 1...3 {
      let worker = try machine.spawned(launcher: 0)
      machine.exited(worker, .exited(1))
    }
    #expect(machine.state.launcherGivenUp == [true, false])
    #expect(machine.lifecycle == .running)
    #expect(machine.effects.logs.contains { $0.1.contains("no more workers are started") })
  }

  @Test func aWorkerDyingWhileBeingStoppedFailsItsJobOnceWithTheReason() throws {
    let machine = Machine()
    let jobs = machine.submit(1, timeout: .seconds(1))
    let worker = try machine.spawned()
    machine.hello(worker)
    machine.deadlines(at: .now.advanced(by: .seconds(2)))
    #expect(machine.failures(of: jobs[0].1) == [.taskTimedOut])
    machine.exited(worker, .signaled(SIGTERM))
    #expect(machine.effects.failures.isEmpty)
    #expect(machine.state.statistics.workersStopped == 1)
    #expect(machine.state.statistics.workersCrashed == 0)
  }

  @Test func aWorkerKilledBecauseThePoolBrokeIsStoppedNotAFailedStart() throws {
    let machine = Machine {
      $0.maxWorkers = 2
      $0.crashPolicy = .breakPool
    }
    _ = machine.submit(2)
    let first = try machine.spawned()
    let second = try machine.spawned()
    machine.hello(first)
    machine.exited(first, .signaled(SIGSEGV))
    #expect(machine.signals(second) == [SIGKILL])
    machine.exited(second, .signaled(SIGKILL))
    #expect(machine.state.statistics.workersFailedToStart == 0)
    #expect(machine.state.statistics.workersStopped == 1)
    #expect(!machine.effects.logs.contains { $0.1.contains("died while starting") })
    #expect(machine.lifecycle == .stopped)
  }

  @Test func aWorkerRetiredDuringItsInitializerStillReportsItsOutcomeAndDyingThereIsAFailedStart() throws {
    let machine = Machine()
    _ = machine.submit(1)
    let worker = try machine.spawned(initializer: [1])
    machine.hello(worker)
    #expect(machine.slot(worker)?.phase == .initializing)
    machine.event { state, effects in state.shutdown(cancelFutures: true, now: .now, &effects) }
    #expect(machine.slot(worker)?.phase == .retiring(from: .initializing))
    machine.event { state, effects in state.initialized(worker: worker.id, failure: nil, now: .now, &effects) }
    #expect(machine.signals(worker).isEmpty)  // not a protocol violation
    #expect(machine.slot(worker)?.phase == .retiring(from: .ready))
    machine.exited(worker, .exited(0))
    #expect(machine.lifecycle == .stopped)

    let dying = Machine()
    _ = dying.submit(1)
    let second = try dying.spawned(initializer: [1])
    dying.hello(second)
    dying.event { state, effects in state.shutdown(cancelFutures: true, now: .now, &effects) }
    dying.exited(second, .exited(3))
    #expect(dying.state.statistics.workersFailedToStart == 1)
  }

  @Test func aWorkerRetiredBeforeItsHelloStillSaysHelloAndExitsCleanly() throws {
    let machine = Machine { $0.maxWorkers = 2 }
    _ = machine.submit(2)
    #expect(machine.effects.spawns == [0, 0])
    let first = try machine.spawned()
    machine.result(first)  // its first job done, it takes the second before the other worker came
    #expect(machine.running(first).count == 1)
    machine.result(first)
    let second = try machine.spawned()
    #expect(machine.running(second).isEmpty)
    machine.event { state, effects in state.shutdown(cancelFutures: false, now: .now, &effects) }
    #expect(machine.slot(second)?.phase == .retiring(from: .beforeHello(initializer: false)))
    machine.hello(second)
    #expect(machine.signals(second).isEmpty)  // not a protocol violation
    #expect(machine.effects.logs.isEmpty)
    #expect(machine.slot(second)?.phase == .retiring(from: .ready))
    machine.exited(second, .exited(0))
    #expect(machine.state.statistics.workersCrashed == 0 && machine.state.statistics.workersStopped == 0)
    machine.hello(first)
    machine.exited(first, .exited(0))
    #expect(machine.lifecycle == .stopped)
  }

  @Test func anInitializerOutcomeFromAWorkerBeingStoppedChangesNothing() throws {
    let machine = Machine()
    _ = machine.submit(1)
    let worker = try machine.spawned(initializer: [1])
    machine.hello(worker)
    machine.event { state, effects in state.forceShutdown(signal: SIGTERM, now: .now, &effects) }
    machine.event { state, effects in
      state.initialized(worker: worker.id, failure: "too late", now: .now, &effects)
    }
    #expect(machine.effects.logs.isEmpty)
    #expect(machine.lifecycle == .shuttingDown)  // not broken by it
  }

  @Test func aLaunchedWorkerSilentPastTheLaunchTimeoutIsStoppedAsAFailedStart() throws {
    let machine = Machine {
      $0.launchers = [.command(["launcher"], workers: 1)]
      $0.launchTimeout = .seconds(5)
      $0.terminationGracePeriod = .seconds(3)
    }
    _ = machine.submit(1)
    let start = MonotonicInstant.now
    let worker = try machine.spawned()
    #expect(machine.deadlines(at: start) != nil)
    machine.deadlines(at: start.advanced(by: .seconds(6)))
    #expect(machine.signals(worker) == [SIGTERM])
    #expect(machine.state.statistics.workersFailedToStart == 1)
    machine.hello(worker)  // held back by its launcher: changes nothing
    #expect(machine.signals(worker).isEmpty)
    machine.deadlines(at: start.advanced(by: .seconds(10)))
    #expect(machine.signals(worker) == [SIGKILL])
    machine.exited(worker, .signaled(SIGKILL))
    #expect(machine.state.statistics.workersFailedToStart == 1)  // counted once
    #expect(machine.effects.spawns == [0])  // a replacement for the queued job
  }

  // MARK: Timeouts

  @Test func aTaskTimeoutSendsSIGTERMThenSIGKILLAfterTheGracePeriod() throws {
    let machine = Machine { $0.terminationGracePeriod = .seconds(3) }
    _ = machine.submit(1, timeout: .seconds(1))
    let worker = try machine.spawned()
    machine.hello(worker)
    let start = MonotonicInstant.now
    let next = machine.deadlines(at: start)
    #expect(machine.signals(worker).isEmpty)
    #expect(next != nil)
    machine.deadlines(at: start.advanced(by: .seconds(2)))
    #expect(machine.signals(worker) == [SIGTERM])
    machine.deadlines(at: start.advanced(by: .seconds(4)))
    #expect(machine.signals(worker).isEmpty)  // within the grace period
    machine.deadlines(at: start.advanced(by: .seconds(6)))
    #expect(machine.signals(worker) == [SIGKILL])
  }

  @Test func aResultFromAWorkerBeingStoppedIsDropped() throws {
    let machine = Machine()
    let jobs = machine.submit(1)
    let worker = try machine.spawned()
    machine.hello(worker)
    let head = try #require(machine.slot(worker)?.inflight.first)
    machine.event { state, effects in state.forceShutdown(signal: SIGTERM, now: .now, &effects) }
    let delivered = machine.event { state, effects in
      state.resultArrived(worker: worker.id, requestID: head.id, now: .now, &effects)
    }
    #expect(delivered == nil)
    #expect(machine.effects.logs.isEmpty)  // not a protocol violation
    machine.exited(worker, .signaled(SIGKILL))
    #expect(machine.failures(of: jobs[0].1) == [.brokenPool])
  }

  // MARK: Recycling and shutdown

  @Test func maxTasksPerChildRetiresAWorkerAndAReplacementTakesTheBacklog() throws {
    let machine = Machine {
      $0.maxTasksPerChild = 1
      $0.jobsPerWorker = 2
    }
    _ = machine.submit(3)
    let first = try machine.spawned()
    #expect(machine.running(first).count == 1)  // never more than its limit
    // Replaced as soon as it has its last job, not once it is done or has exited.
    #expect(machine.effects.spawns == [0])
    machine.hello(first)
    machine.result(first)
    #expect(machine.slot(first)?.phase == .retiring(from: .ready))
    #expect(machine.queued == 2)
    #expect(machine.effects.spawns.isEmpty)  // its replacement is on its way
    let second = try machine.spawned()
    #expect(machine.running(second).count == 1)
    machine.exited(first, .exited(0))
    #expect(machine.effects.spawns.isEmpty)
    #expect(machine.state.statistics.workersRetired == 1)
    #expect(machine.state.statistics.workersCrashed == 0)
  }

  @Test func aWorkersLastJobGoesWithStopAndNoSecondStopFollowsItsResult() throws {
    let machine = Machine {
      $0.maxTasksPerChild = 2
      $0.jobsPerWorker = 2
    }
    _ = machine.submit(3)
    let first = try machine.spawned()
    // Both of its jobs, then `stop`, in one go: it exits once its last reply is out. Its
    // replacement starts now, for the third job.
    #expect(Self.kinds(of: machine.effects.writes, to: first) == [.run, .run, .stop])
    #expect(machine.effects.spawns == [0])
    #expect(machine.slot(first)?.stopSent == true)
    #expect(machine.slot(first)?.phase == .starting(initializer: false, launchDeadline: nil))
    machine.hello(first)
    machine.result(first)
    #expect(machine.slot(first)?.phase == .ready)  // still runs its last job
    machine.result(first)
    // Retired (and replaced) as a worker stopped when idle, without another `stop`.
    #expect(machine.slot(first)?.phase == .retiring(from: .ready))
    #expect(Self.kinds(of: machine.effects.writes, to: first).isEmpty)
    #expect(machine.effects.spawns.isEmpty)
    machine.exited(first, .exited(0))
    #expect(machine.state.statistics.workersRetired == 1)
    #expect(machine.state.statistics.workersCrashed == 0)
  }

  @Test func aWorkerThatDiesInItsLastJobCrashedEvenThoughItWasToldToStop() throws {
    let machine = Machine { $0.maxTasksPerChild = 1 }
    let jobs = machine.submit(2)
    let first = try machine.spawned()
    #expect(Self.kinds(of: machine.effects.writes, to: first) == [.run, .stop])
    #expect(machine.effects.spawns == [0])  // its replacement, for the next job
    machine.hello(first)
    machine.exited(first, .signaled(SIGSEGV))
    #expect(machine.failures(of: jobs[0].1) == [.workerCrashed])
    #expect(machine.state.statistics.workersCrashed == 1)
    #expect(machine.effects.spawns.isEmpty)  // on its way already
    let second = try machine.spawned()
    #expect(machine.slot(second)?.standby == false)
    #expect(machine.running(second).count == 1)
  }

  @Test func aStandbyTakesTheNextJobWhenTheWorkerItReplacesDiesInItsLastJob() throws {
    let machine = Machine { $0.maxTasksPerChild = 1 }
    let jobs = machine.submit(2)
    let first = try machine.spawned()
    let standby = try machine.spawned()
    #expect(machine.slot(standby)?.standby == true)
    machine.hello(first)
    machine.hello(standby)
    #expect(machine.running(standby).isEmpty)
    machine.exited(first, .signaled(SIGSEGV))
    #expect(machine.failures(of: jobs[0].1) == [.workerCrashed])
    #expect(machine.slot(standby)?.standby == false)
    #expect(machine.running(standby) == [ObjectIdentifier(jobs[1].0)])
    #expect(machine.effects.spawns.isEmpty)  // no job is left for another
  }

  @Test func aPoolWithoutATaskLimitSendsStopOnlyToIdleWorkersAtShutdown() throws {
    let machine = Machine()
    _ = machine.submit(1)
    let worker = try machine.spawned()
    #expect(Self.kinds(of: machine.effects.writes, to: worker) == [.run])
    machine.hello(worker)
    machine.event { state, effects in state.shutdown(cancelFutures: false, now: .now, &effects) }
    #expect(Self.kinds(of: machine.effects.writes, to: worker).isEmpty)
    machine.result(worker)
    #expect(Self.kinds(of: machine.effects.writes, to: worker) == [.stop])
    #expect(machine.slot(worker)?.phase == .retiring(from: .ready))
  }

  /// The kinds of the frames written to `worker`, in order.
  static func kinds(of writes: [PoolEffects.Write], to worker: (id: Int, pid: Int32)) -> [Frame.Kind] {
    writes.filter { $0.worker == worker.id }.compactMap { write in
      write.bytes.withUnsafeBytes { try? Frame.header(in: $0, at: 0).kind }
    }
  }

  @Test func aWorkerIsReplacedWhileItRunsItsLastJobWithABoundedOverlap() throws {
    let machine = Machine { $0.maxTasksPerChild = 1 }
    _ = machine.submit(4)
    #expect(machine.effects.spawns == [0])
    let first = try machine.spawned()
    // Given its last job: its replacement starts at once, and stands by while that job runs.
    #expect(machine.effects.spawns == [0])
    let second = try machine.spawned()
    #expect(machine.slot(second)?.standby == true)
    #expect(machine.running(second).isEmpty)  // only one worker runs jobs (maxWorkers 1)
    #expect(machine.effects.spawns.isEmpty)  // one replacement per worker
    machine.hello(first)
    machine.hello(second)
    #expect(machine.running(second).isEmpty)
    machine.result(first)
    // Retired: the standby takes the next job, and is replaced in turn.
    #expect(machine.slot(first)?.phase == .retiring(from: .ready))
    #expect(machine.slot(second)?.standby == false)
    #expect(machine.running(second).count == 1)
    #expect(machine.effects.spawns == [0])
    let third = try machine.spawned()
    #expect(machine.slot(third)?.standby == true)
    machine.hello(third)
    machine.result(second)
    #expect(machine.running(third).count == 1)
    // Three processes alive (one running, two exiting): no fourth until one of them is gone.
    #expect(machine.effects.spawns.isEmpty)
    #expect(machine.state.workers.count == 3)
    machine.exited(first, .exited(0))
    #expect(machine.effects.spawns == [0])
    let fourth = try machine.spawned()
    #expect(machine.slot(fourth)?.standby == true)
    #expect(machine.state.launcherReplaced == [1])
    machine.exited(second, .exited(0))
    #expect(machine.effects.spawns.isEmpty)
    #expect(machine.state.launcherReplaced == [0])
    #expect(machine.queued == 1)
    #expect(machine.state.workers.filter { !$0.inflight.isEmpty }.count == 1)
    #expect(machine.state.statistics.workersCrashed == 0)
  }

  @Test func aStandbyWithNothingLeftToDoIsStoppedAtShutdown() throws {
    let machine = Machine { $0.maxTasksPerChild = 1 }
    _ = machine.submit(2)
    let first = try machine.spawned()
    let standby = try machine.spawned()
    machine.hello(first)
    machine.hello(standby)
    machine.event { state, effects in state.shutdown(cancelFutures: false, now: .now, &effects) }
    machine.result(first)
    #expect(machine.running(standby).count == 1)  // the queued job still runs
    machine.result(standby)
    machine.exited(first, .exited(0))
    machine.exited(standby, .exited(0))
    #expect(machine.lifecycle == .stopped)
    #expect(machine.state.standbys == [[]])
    #expect(machine.state.launcherFinishing == [0])
  }

  @Test func shutdownWithCancelFuturesCancelsQueuedWorkAndLetsRunningWorkFinish() throws {
    let machine = Machine()
    let jobs = machine.submit(3)
    let worker = try machine.spawned()
    machine.hello(worker)
    machine.event { state, effects in state.shutdown(cancelFutures: true, now: .now, &effects) }
    #expect(machine.effects.cancellations.count == 1)
    #expect(machine.effects.failures.isEmpty)
    #expect(machine.lifecycle == .shuttingDown)
    machine.result(worker)
    #expect(machine.slot(worker)?.phase == .ready)  // the job handed to it behind the first runs too
    machine.result(worker)
    #expect(machine.slot(worker)?.phase == .retiring(from: .ready))
    machine.exited(worker, .exited(0))
    #expect(machine.lifecycle == .stopped)
    #expect(machine.effects.stopped)
    _ = jobs
  }

  @Test(arguments: [SIGTERM, SIGKILL])
  func forcedShutdownSignalsEveryWorkerCancelsQueuedWorkAndFailsRunningWork(_ signal: Int32) throws {
    let machine = Machine {
      $0.terminationGracePeriod = .seconds(3)
      $0.jobsPerWorker = 1
    }
    let jobs = machine.submit(2)
    let worker = try machine.spawned()
    machine.hello(worker)
    let start = MonotonicInstant.now
    machine.event { state, effects in state.forceShutdown(signal: signal, now: start, &effects) }
    #expect(machine.signals(worker) == [signal])
    #expect(machine.effects.cancellations.count == 1)
    if signal == SIGTERM {
      machine.deadlines(at: start.advanced(by: .seconds(4)))
      #expect(machine.signals(worker) == [SIGKILL])
    }
    machine.exited(worker, .signaled(SIGKILL))
    #expect(machine.failures(of: jobs[0].1) == [.brokenPool])
    #expect(machine.effects.spawns.isEmpty)  // nobody is replaced
    #expect(machine.lifecycle == .stopped)
  }

  // MARK: Dispatch

  @Test func aWorkerOfFastJobsGetsItsDeepPipelineInOneGoAndIsToppedUpOnlyAtHalf() throws {
    let machine = Machine { $0.jobsPerWorker = 2 }
    _ = machine.submit(1)
    let worker = try machine.spawned()
    machine.hello(worker)
    machine.result(worker)
    // Eight fast jobs in a row (as `AdaptivePipeliningTests` checks): depth 64 from now on.
    machine.state.workers[0].fastStreak = WorkerSlot.fastStreakNeeded
    _ = machine.submit(72)
    #expect(machine.effects.writes.filter { $0.worker == worker.id }.count == 64)
    #expect(machine.queued == 8)
    _ = machine.submit(1)
    #expect(machine.effects.writes.isEmpty)
    #expect(machine.queued == 9)
  }

  @Test func jobsGoToTheLeastLoadedWorkersFirst() throws {
    let machine = Machine {
      $0.maxWorkers = 3
      $0.jobsPerWorker = 2
    }
    _ = machine.submit(3)
    let workers = try (0..<3).map { _ in try machine.spawned() }
    for worker in workers { machine.hello(worker) }
    #expect(workers.map { machine.running($0).count } == [1, 1, 1])
    _ = machine.submit(2)
    #expect(workers.map { machine.running($0).count }.sorted() == [1, 2, 2])
    machine.result(workers[0])
    machine.result(workers[1])
    // The one left holding one job and the ones emptied take the next before any holds three.
    _ = machine.submit(3)
    #expect(workers.map { machine.running($0).count }.allSatisfy { $0 == 2 })
  }

  // MARK: Launched workers and frames

  @Test func aLaunchedWorkerGetsNoWorkBeforeItsHello() throws {
    let machine = Machine { $0.launchers = [.command(["launcher"], workers: 1)] }
    _ = machine.submit(2)
    let worker = try machine.spawned()
    #expect(machine.running(worker).isEmpty)
    machine.hello(worker)
    #expect(!machine.running(worker).isEmpty)
  }

  @Test func aSecondHelloOrAnInitializerOutcomeOutOfPlaceIsAProtocolViolation() throws {
    let machine = Machine()
    let jobs = machine.submit(1)
    let worker = try machine.spawned()
    machine.hello(worker)
    machine.event { state, effects in state.initialized(worker: worker.id, failure: "forged", now: .now, &effects) }
    #expect(machine.signals(worker) == [SIGKILL])
    #expect(machine.failures(of: jobs[0].1) == [.protocolViolation])
    #expect(machine.lifecycle == .running)
    let second = try machine.spawned()
    machine.hello(second)
    machine.hello(second)
    #expect(machine.signals(second) == [SIGKILL])
  }

  @Test func runningOutOfDescriptorsWhileWorkersRunRetriesLaterInsteadOfFailingTheLauncher() throws {
    let machine = Machine { $0.maxWorkers = 2 }
    _ = machine.submit(4)
    #expect(machine.effects.spawns == [0, 0])
    let worker = try machine.spawned()
    machine.hello(worker)
    let start = MonotonicInstant.now
    let exhausted = ProcessPoolError(.workerStartFailed, "EMFILE")
    machine.event { state, effects in
      state.spawnFailed(launcher: 0, exhausted, exhausted: true, now: start, &effects)
    }
    #expect(machine.state.statistics.workersFailedToStart == 0)
    #expect(machine.effects.spawns.isEmpty)
    machine.result(worker)
    #expect(machine.effects.spawns.isEmpty)  // not before the retry time
    machine.deadlines(at: start.advanced(by: .seconds(1)))
    #expect(machine.effects.spawns == [0])
  }

  @Test func runningOutOfDescriptorsWhileAnotherWorkerIsOnItsWayRetriesLaterAndAloneFailsAStart() throws {
    let machine = Machine { $0.maxWorkers = 2 }
    _ = machine.submit(4)
    #expect(machine.effects.spawns == [0, 0])
    let start = MonotonicInstant.now
    let exhausted = ProcessPoolError(.workerStartFailed, "EMFILE")
    // The other spawn (a fork the server has yet to answer) may still give the pool a worker.
    machine.event { state, effects in
      state.spawnFailed(launcher: 0, exhausted, exhausted: true, now: start, &effects)
    }
    #expect(machine.state.statistics.workersFailedToStart == 0)
    #expect(machine.lifecycle == .running)
    #expect(
      machine.effects.logs.map(\.1) == [
        "cannot start another worker now (EMFILE); going on with 1 on their way and retrying"
      ])
    // It fails too, with no worker left on its way: a failed start of the launcher.
    machine.event { state, effects in
      state.spawnFailed(launcher: 0, exhausted, exhausted: true, now: start, &effects)
    }
    #expect(machine.state.statistics.workersFailedToStart == 1)
  }

  @Test func aCancelledJobIsSkippedAndItsFuturesAreToldOnlyOnceTheLockIsReleased() throws {
    let machine = Machine { $0.jobsPerWorker = 1 }
    let jobs = machine.submit(2)
    let worker = try machine.spawned()
    machine.hello(worker)
    jobs[1].1.cancelAll()
    machine.result(worker)
    // Skipped under the lock without running its futures' watchers: that is an effect.
    #expect(machine.effects.acknowledgedCancels.count == 1)
    #expect((machine.effects.acknowledgedCancels.first as? RecordingSink) === jobs[1].1)
    #expect(machine.effects.failures.isEmpty)
    #expect(machine.running(worker).isEmpty)
  }

  @Test func cancelTerminatingWorkerStopsOnlyTheWorkerRunningThatJob() throws {
    let machine = Machine { $0.jobsPerWorker = 2 }
    let jobs = machine.submit(2)
    let worker = try machine.spawned()
    machine.hello(worker)
    let behind = machine.event { state, effects in
      state.stopWorker(running: ObjectIdentifier(jobs[1].1), now: .now, &effects)
    }
    #expect(behind == nil)
    #expect(machine.signals(worker).isEmpty)
    let head = machine.event { state, effects in
      state.stopWorker(running: ObjectIdentifier(jobs[0].1), now: .now, &effects)
    }
    #expect(head === jobs[0].0)
    #expect(machine.signals(worker) == [SIGTERM])
    #expect(machine.queued == 1)  // the job behind it goes back to the queue
  }
}
