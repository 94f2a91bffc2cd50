import Synchronization
import Testing

@testable import ProcessPool

/// The rules for lazy inputs (`JobSource`) on the state alone: when the feeder is started, put to
/// sleep, woken and ended, and what a shutdown or a broken pool does to a source.
extension PoolStateTests {
  /// A source that records why it was stopped; the tests feed it by hand.
  final class RecordingSource: JobSource {
    private let stops = Mutex<[ProcessPoolError]>([])
    var stopped: [ProcessPoolError.Code] { stops.withLock { $0.map(\.code) } }
    func feed(into core: PoolCore) {}
    func stop(_ error: ProcessPoolError) { stops.withLock { $0.append(error) } }
  }

  static func jobs(_ count: Int) -> RecordingBatch { RecordingBatch(count) }

  @Test func theFeederStartsBelowTheLowWaterMarkSleepsAtTheHighOneAndEndsWithTheLastSource() {
    let machine = Machine()
    let source = RecordingSource()
    #expect(machine.event { state, effects in state.addSource(source, now: .now, &effects) } == nil)
    #expect(machine.effects.startFeeder)
    guard case .feed(let first) = machine.event({ state, _ in state.nextFeederStep() }) else {
      Issue.record("the feeder has nothing to pull")
      return
    }
    #expect(first === source)
    let full = machine.state.feedHighWater
    let rejection = machine.event { state, effects in
      state.sourceFed(source, Self.jobs(full), exhausted: false, now: .now, &effects)
    }
    #expect(rejection == nil)
    // No worker takes the jobs: the queue is full enough, so the feeder sleeps.
    guard case .sleep = machine.event({ state, _ in state.nextFeederStep() }) else {
      Issue.record("the feeder does not sleep with a full queue")
      return
    }
    // The map is abandoned: the sleeping feeder is woken, and ends.
    machine.event { state, effects in state.removeSource(source, now: .now, &effects) }
    #expect(machine.effects.wakeFeeder)
    guard case .exit = machine.event({ state, _ in state.nextFeederStep() }) else {
      Issue.record("the feeder does not end without a source")
      return
    }
    let running = machine.state.feederRunning
    #expect(!running)
    #expect(source.stopped.isEmpty)
  }

  @Test func theFeederSleepsUntilASourceHandsItsBatchOverLateAndIsWokenByIt() {
    let machine = Machine()
    let source = RecordingSource()
    let later = RecordingSource()
    #expect(machine.event { state, effects in state.addSource(source, now: .now, &effects) } == nil)
    #expect(machine.event { state, effects in state.addSource(later, now: .now, &effects) } == nil)
    guard case .feed(let first) = machine.event({ state, _ in state.nextFeederStep() }) else {
      Issue.record("the feeder has nothing to pull")
      return
    }
    #expect(first === source)
    // The source pulls on its actor: until it hands the batch over, it is not asked again, and
    // the next map is not pulled before it (maps run in the order they were made).
    guard case .sleep = machine.event({ state, _ in state.nextFeederStep() }) else {
      Issue.record("the feeder asks a source twice, or skips it")
      return
    }
    let rejection = machine.event { state, effects in
      state.sourceFed(source, Self.jobs(1), exhausted: false, now: .now, &effects)
    }
    #expect(rejection == nil)
    #expect(machine.effects.wakeFeeder)
    guard case .feed(let again) = machine.event({ state, _ in state.nextFeederStep() }) else {
      Issue.record("the woken feeder does not pull again")
      return
    }
    #expect(again === source)
    // Abandoned while it pulls: the feeder goes on with the next map.
    machine.event { state, effects in state.removeSource(source, now: .now, &effects) }
    guard case .feed(let next) = machine.event({ state, _ in state.nextFeederStep() }) else {
      Issue.record("the feeder waits for an abandoned source")
      return
    }
    #expect(next === later)
  }

  @Test func aGracefulShutdownWaitsForASourceToRunOut() throws {
    let machine = Machine()
    _ = machine.submit(1)
    let worker = try machine.spawned()
    machine.hello(worker)
    let source = RecordingSource()
    #expect(machine.event { state, effects in state.addSource(source, now: .now, &effects) } == nil)
    machine.event { state, effects in state.shutdown(cancelFutures: false, now: .now, &effects) }
    machine.result(worker)
    // The queue is empty but the source is not: the worker stays for what it will pull.
    #expect(machine.slot(worker)?.phase == .ready)
    #expect(machine.lifecycle == .shuttingDown)
    // While shutting down, the source's last batch is still taken.
    let rejection = machine.event { state, effects in
      state.sourceFed(source, Self.jobs(1), exhausted: true, now: .now, &effects)
    }
    #expect(rejection == nil)
    machine.result(worker)
    #expect(machine.slot(worker)?.phase == .retiring(from: .ready))
    machine.exited(worker, .exited(0))
    #expect(machine.lifecycle == .stopped)
    #expect(source.stopped.isEmpty)
  }

  @Test(arguments: [true, false])
  func aBrokenPoolOrCancelledWorkStopsItsSources(_ broken: Bool) throws {
    let machine = Machine { $0.crashPolicy = .breakPool }
    _ = machine.submit(1)
    let worker = try machine.spawned()
    machine.hello(worker)
    let source = RecordingSource()
    #expect(machine.event { state, effects in state.addSource(source, now: .now, &effects) } == nil)
    if broken {
      machine.exited(worker, .exited(9))
    } else {
      machine.event { state, effects in state.shutdown(cancelFutures: true, now: .now, &effects) }
    }
    let code: ProcessPoolError.Code = broken ? .brokenPool : .cancelled
    #expect(machine.effects.stoppedSources.map(\.1.code) == [code])
    #expect(machine.effects.stoppedSources.first?.0 === source)
    // A batch the feeder was pulling meanwhile is refused with the reason.
    let rejection = machine.event { state, effects in
      state.sourceFed(source, Self.jobs(1), exhausted: false, now: .now, &effects)
    }
    #expect(rejection?.code == code)
    #expect(machine.queued == 0)
  }
}
