import Testing

@testable import ProcessPool

/// The rule that keeps a worker's shared region from running out: the large inputs a worker holds
/// take at most `SharedValues.inflightBudget` together, so the next one always finds room there
/// (without room, a frame would fall back to the socket, which refuses one over 1 GiB, and the
/// worker would die as if it had crashed).
extension PoolStateTests {
  /// Submits one job per size, each with a `run` frame of that many bytes.
  static func submitSized(_ machine: Machine, _ sizes: [Int]) -> [(Job, RecordingSink)] {
    let jobs = sizes.map { size -> (Job, RecordingSink) in
      let sink = RecordingSink()
      return (Job(frame: [UInt8](repeating: 0, count: size), sink: sink, timeout: nil), sink)
    }
    let rejection = machine.event { state, effects in state.submit(jobs.map(\.0), now: .now, &effects) }
    #expect(rejection == nil)
    return jobs
  }

  /// A local worker with shared regions, spawned and ready.
  static func sharingWorker(_ machine: Machine, pid: Int32) -> (id: Int, pid: Int32) {
    machine.event { state, effects in
      state.workerSpawned(
        worker: Int(pid), launcher: 0, pid: pid, spawnedAt: .now, sharesMemory: true, initializer: nil, &effects)
    }
    let worker = (id: Int(pid), pid: pid)
    machine.hello(worker)
    return worker
  }

  @Test func aLargeInputWaitsUntilItsWorkersRegionSurelyHasRoom() throws {
    let large = SharedValues.threshold
    // Room for two of them in flight, not three.
    let budget = 2 * SharedValues.roundUp(large)
    let saved = SharedValues.inflightBudget.exchange(budget, ordering: .relaxed)
    defer { SharedValues.inflightBudget.store(saved, ordering: .relaxed) }
    let machine = Machine { $0.jobsPerWorker = 4 }
    let jobs = Self.submitSized(machine, [large, large, large, 100])
    let worker = Self.sharingWorker(machine, pid: 4001)
    // The third large one waits, and the small one behind it keeps its place.
    #expect(machine.running(worker) == jobs[0...1].map { ObjectIdentifier($0.0) })
    #expect(machine.queued == 2)
    machine.result(worker)
    #expect(machine.running(worker) == jobs[1...3].map { ObjectIdentifier($0.0) })
    #expect(machine.queued == 0)
    #expect(jobs.allSatisfy { machine.failures(of: $0.1).isEmpty })
  }

  @Test func aWorkerHoldingNoLargeInputTakesOneOfAnySize() throws {
    let saved = SharedValues.inflightBudget.exchange(SharedValues.pageSize, ordering: .relaxed)
    defer { SharedValues.inflightBudget.store(saved, ordering: .relaxed) }
    let machine = Machine { $0.jobsPerWorker = 2 }
    let jobs = Self.submitSized(machine, [100, 4 * SharedValues.threshold, SharedValues.threshold])
    let worker = Self.sharingWorker(machine, pid: 4002)
    // Small jobs do not count; over the budget alone, it still goes (it fits an empty region).
    #expect(machine.running(worker) == jobs[0...1].map { ObjectIdentifier($0.0) })
    machine.result(worker)
    #expect(machine.running(worker) == [ObjectIdentifier(jobs[1].0)])
    machine.result(worker)
    #expect(machine.running(worker) == [ObjectIdentifier(jobs[2].0)])
  }

  @Test func aWorkerWithoutSharedRegionsIsNotHeldBack() throws {
    let saved = SharedValues.inflightBudget.exchange(SharedValues.pageSize, ordering: .relaxed)
    defer { SharedValues.inflightBudget.store(saved, ordering: .relaxed) }
    let machine = Machine { $0.jobsPerWorker = 2 }
    let jobs = Self.submitSized(machine, [SharedValues.threshold, SharedValues.threshold])
    let worker = try machine.spawned()
    machine.hello(worker)
    #expect(machine.running(worker) == jobs.map { ObjectIdentifier($0.0) })
  }
}
