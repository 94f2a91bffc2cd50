import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// The runtime's worker channels: each closed exactly once when its worker is reaped, whatever
/// it still had queued, and none left open by a pool of many workers.
extension WorkerProcessTests {
  @Suite struct WorkerChannelTests {
    init() {
      // The deaths are expected here; keep the test log readable.
      ProcessPoolLog.setHandler { _, _ in }
    }

    @Test func aWorkerKilledWithFramesQueuedForItLosesNoWork() async throws {
      // Large values on the socket, as without shared memory (the suite runs serialized).
      SharedValues.unavailable.store(true, ordering: .relaxed)
      defer { SharedValues.unavailable.store(false, ordering: .relaxed) }
      var configuration = ProcessPoolExecutor.Configuration.workers(1)
      configuration.jobsPerWorker = 32
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let blocker = try pool.submit(gate.task, 0)
        #expect(await gate.waitForArrivals(1))
        // Far more than the socket holds: the rest waits in the worker's channel.
        let payload = [UInt8](repeating: 7, count: 4 << 20)
        let echoes = try (0..<12).map { _ in try pool.submit(Echo(), payload) }
        let queued = pool.core.channels.withLock { $0.values.map(\.queuedBytes).reduce(0, +) }
        #expect(queued > 0)
        let victim = try #require(pool.workerPIDs.first)
        kill(victim, SIGKILL)
        await #expect { try await blocker.value } throws: {
          ($0 as? ProcessPoolError)?.code == .workerCrashed
        }
        // Sent to the dead worker but not started: run again by its replacement.
        for future in echoes { #expect(try await future.value == payload) }
        #expect(pool.statistics.workersCrashed == 1)
      }
    }

    /// A local worker with the shared regions keeps the system's socket buffers (its large
    /// values never cross the socket); one without them gets the larger buffers, both ends.
    @Test func onlyAWorkerWithoutSharedRegionsGetsLargerSocketBuffers() async throws {
      let probe = try Syscall.socketPair()
      defer {
        Syscall.close(probe.0)
        Syscall.close(probe.1)
      }
      let systemDefault = Self.sendBuffer(probe.0)
      Syscall.setSocketBuffers(probe.0, bytes: 1 << 20)
      let enlarged = Self.sendBuffer(probe.0)
      for unavailable in [false, true] {
        SharedValues.unavailable.store(unavailable, ordering: .relaxed)
        defer { SharedValues.unavailable.store(false, ordering: .relaxed) }
        try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
          #expect(try await pool.submit(Square(), 3).value == 9)
          let sizes = pool.core.channels.withLock { $0.values.map { Self.sendBuffer($0.socket) } }
          #expect(sizes == [unavailable ? enlarged : systemDefault])
          // The worker's end too: a large reply on the socket crosses in as few wake-ups.
          #expect(try await pool.submit(SocketSendBuffer(), 3).value == (unavailable ? enlarged : systemDefault))
        }
      }
    }

    static func sendBuffer(_ socket: Int32) -> Int32 {
      var size: Int32 = 0
      var length = socklen_t(MemoryLayout<Int32>.size)
      return getsockopt(socket, SOL_SOCKET, SO_SNDBUF, &size, &length) == 0 ? size : -1
    }

    @Test func sixtyFourWorkersRunWorkAndLeaveNoDescriptorBehind() async throws {
      try await withPool(.workers(64)) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        // All 64 at once, each holding one task, so each has its channel open.
        let held = try (0..<64).map { try pool.submit(gate.task, $0) }
        #expect(await gate.waitForArrivals(64))
        #expect(pool.core.channels.withLock { $0.count } == 64)
        let squares = try (0..<2000).map { try pool.submit(Square(), $0) }
        // Some die with work queued behind them; their replacements take it.
        let crashes = try (0..<8).map { _ in try pool.submit(Crash(), .exit) }
        gate.open()
        for (index, future) in held.enumerated() { #expect(try await future.value == index) }
        for (index, future) in squares.enumerated() { #expect(try await future.value == index * index) }
        for future in crashes {
          await #expect { try await future.value } throws: { ($0 as? ProcessPoolError)?.code == .workerCrashed }
        }
        #expect(pool.statistics.workersCrashed == 8)
      }
    }
  }
}

/// The send buffer's size of the worker's end of its socket (fd 3 in a local worker).
struct SocketSendBuffer: ProcessTask {
  func run(_ fd: Int32) async throws -> Int32 { WorkerProcessTests.WorkerChannelTests.sendBuffer(fd) }
}
