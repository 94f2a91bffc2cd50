import CProcessPoolShims
import Synchronization
import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// Workers started through a launcher command or ssh instead of posix_spawn: the same futures,
/// map, crash handling and timeouts, over the worker's stdin and stdout.
extension WorkerProcessTests {
  @Suite struct LauncherTests {
    init() {
      ProcessPoolLog.setHandler { _, _ in }
    }

    static let me = ProcessPoolWorker.executablePath

    static func configuration(_ launchers: WorkerLauncher...) -> ProcessPoolExecutor.Configuration {
      var configuration = ProcessPoolExecutor.Configuration()
      configuration.launchers = launchers
      return configuration
    }

    @Test func commandWorkersTalkOverPipesAndTaskOutputStaysOffTheProtocol() async throws {
      // The worker's stdout is a pipe through `cat`, as behind ssh.
      let launcher = WorkerLauncher.command(["/bin/sh", "-c", "\"$0\" | cat", Self.me], workers: 2)
      try await withPool(Self.configuration(launcher)) { (pool: ProcessPoolExecutor) async throws in
        var results: [Int] = []
        for try await value in try pool.map(Square(), 0..<100, chunksize: 7) { results.append(value) }
        #expect(results == (0..<100).map { $0 * $0 })
        #expect(try await pool.submit(PrintToStandardOutput(), 5).value == 5)
        #expect(try await pool.submit(Echo(), [UInt8](repeating: 7, count: 1 << 20)).value.count == 1 << 20)
        #expect(pool.statistics.workersCrashed == 0)
        #expect(pool.statistics.workersStarted <= 2)
      }
    }

    @Test func aPoolMixesLocalAndLaunchedWorkers() async throws {
      let configuration = Self.configuration(.local(workers: 1), .command([Self.me], workers: 1))
      #expect(configuration.capacity == 2)
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        // Two tasks that hold their workers: both launchers must have started one.
        let held = try (0..<2).map { try pool.submit(gate.task, $0) }
        #expect(await gate.waitForArrivals(2))
        #expect(pool.statistics.workersStarted == 2)
        gate.open()
        for (index, future) in held.enumerated() { #expect(try await future.value == index) }
        let pids = try await Set(pool.map(ProcessID(), 0..<40, chunksize: 1).reduce(into: []) { $0.append($1) })
        #expect(pids.isSubset(of: Set(pool.workerPIDs)))
      }
    }

    @Test func aLaunchedWorkerThatCrashesFailsItsTaskAndIsReplaced() async throws {
      let launcher = WorkerLauncher.command(["/bin/sh", "-c", "\"$0\" | cat", Self.me])
      try await withPool(Self.configuration(launcher)) { (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(Crash(), .exit).value } throws: {
          let error = $0 as? ProcessPoolError
          return error?.code == .workerCrashed && error!.message.contains("(/bin/sh)")
        }
        #expect(try await pool.submit(Square(), 3).value == 9)
        #expect(pool.statistics.workersStarted == 2)
        #expect(pool.statistics.workersCrashed == 1)
      }
    }

    @Test func aTimeoutStopsTheLaunchersWholeProcessGroup() async throws {
      // The shell stays the worker's parent (no exec), so stopping only the launcher's pid would
      // orphan the worker. The test adopts orphans to see that the worker itself ended.
      pp_set_child_subreaper(1)
      defer { pp_set_child_subreaper(0) }
      let launcher = WorkerLauncher.command(["/bin/sh", "-c", "\"$0\"; true", Self.me])
      try await withPool(Self.configuration(launcher)) { (pool: ProcessPoolExecutor) async throws in
        let worker = try await pool.submit(ProcessID(), 0).value
        #expect(!pool.workerPIDs.contains(worker))
        await #expect { try await pool.submit(Sleep(), 600_000, timeout: .milliseconds(100)).value } throws: {
          ($0 as? ProcessPoolError)?.code == .taskTimedOut
        }
        #expect(waitForExit(worker, timeout: .seconds(30)), "the launched worker \(worker) outlived its launcher")
        #expect(try await pool.submit(Square(), 4).value == 16)
        #expect(pool.statistics.workersStopped == 1 && pool.statistics.workersCrashed == 0)
      }
    }

    @Test func aWorkerSpeakingAnotherProtocolVersionIsRefused() async throws {
      // A "worker" whose hello says protocol version 99: length 17, kind 1, id 0, version, pid.
      let hello =
        "\\021\\000\\000\\000\\001" + String(repeating: "\\000", count: 8) + "\\143\\000\\000\\000\\001\\000\\000\\000"
      let launcher = WorkerLauncher.command(["printf", hello])
      try await withPool(Self.configuration(launcher)) { (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(Square(), 2).value } throws: {
          "\($0)".contains("speaks protocol version 99, this program \(Frame.protocolVersion)")
        }
        #expect { try pool.submit(Square(), 2) } throws: { ($0 as? ProcessPoolError)?.code == .brokenPool }
        #expect(pool.statistics.workersStarted == 1)
      }
    }

    @Test func aMarkerInTheLaunchersCommandLineGetsTheWorkersToken() async throws {
      // A command that does not pass its environment on: the marker is in its command line.
      let launcher = WorkerLauncher.command([
        "/bin/sh", "-c", "unset PROCESSPOOL_WORKER_FD; exec env \(WorkerLauncher.environmentMarker) \"$0\"", Self.me,
      ])
      try await withPool(Self.configuration(launcher)) { (pool: ProcessPoolExecutor) async throws in
        #expect(try await pool.submit(Square(), 3).value == 9)
        #expect(pool.statistics.workersCrashed == 0 && pool.statistics.workersStarted == 1)
      }
    }

    @Test func aLauncherThatCannotStartIsGivenUpWhileOthersGoOn() async throws {
      let configuration = Self.configuration(.command(["/bin/false"]), .local(workers: 1))
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        // The local worker is held until the failing launcher has been given up, so the work
        // waiting meanwhile keeps the pool trying it (three times, not fewer).
        let gate = TestGate()
        defer { gate.close() }
        let givenUp = ConditionLock()
        let said = Mutex(false)
        ProcessPoolLog.setHandler { _, message in
          guard message.contains("no more workers are started") else { return }
          givenUp.withLock {
            said.withLock { $0 = true }
            givenUp.broadcast()
          }
        }
        defer { ProcessPoolLog.setHandler { _, _ in } }
        let held = try pool.submit(gate.task, -1)
        let results = try pool.map(Square(), 0..<20, chunksize: 1)
        #expect(givenUp.withLock { givenUp.wait(until: .now.advanced(by: .seconds(60))) { said.withLock { $0 } } })
        #expect(await gate.waitForArrivals(1))
        gate.open()
        #expect(try await held.value == -1)
        #expect(try await results.reduce(into: []) { $0.append($1) } == (0..<20).map { $0 * $0 })
        let statistics = pool.statistics
        #expect(statistics.workersCrashed == 0)
        #expect(statistics.workersFailedToStart == 3)
      }
    }

    @Test func aMissingLauncherProgramBreaksThePoolWithItsName() async throws {
      let configuration = Self.configuration(.command(["processpool-no-such-launcher"]))
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(Square(), 2).value } throws: {
          let error = $0 as? ProcessPoolError
          return error?.code == .brokenPool && error!.message.contains("cannot start processpool-no-such-launcher")
        }
      }
    }

    @Test func aLaunchedWorkerThatNeverSaysHelloIsStoppedAtTheLaunchTimeout() async throws {
      // Never writes a byte: without the limit the pool would wait for ever.
      var configuration = Self.configuration(.command(["sleep", "600"]))
      configuration.launchTimeout = .milliseconds(300)
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(Square(), 2).value } throws: {
          let error = $0 as? ProcessPoolError
          return error?.code == .brokenPool
            && error!.message.hasSuffix(
              "3 workers (sleep) in a row did not start: no hello from `sleep 600` within 300 ms: "
                + "is its output buffered? for srun use `.slurm` or `-u`")
        }
        #expect(pool.statistics.workersFailedToStart == 3)
        #expect(pool.statistics.workersCrashed == 0)
      }
    }

    @Test func theLaunchTimeoutLeavesOtherLaunchersRunning() async throws {
      var configuration = Self.configuration(.command(["sleep", "600"]), .local(workers: 1))
      configuration.launchTimeout = .milliseconds(200)
      configuration.jobsPerWorker = 1
      let (messages, log) = AsyncStream.makeStream(of: String.self)
      ProcessPoolLog.setHandler { _, message in log.yield(message) }
      defer { ProcessPoolLog.setHandler { _, _ in } }
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        // Held work keeps the pool starting workers of the silent launcher until it gives up.
        let held = try pool.submit(gate.task, 1)
        #expect(await gate.waitForArrivals(1))
        let queued = try pool.submit(Square(), 5)
        for await message in messages where message.contains("no more workers are started with sleep") {
          #expect(message.contains("no hello from `sleep 600` within 200 ms"))
          break
        }
        #expect(pool.statistics.workersFailedToStart == 3)
        gate.open()
        #expect(try await held.value == 1)
        #expect(try await queued.value == 25)
      }
    }

    @Test func invalidLaunchersAreRejected() throws {
      #expect { try ProcessPoolExecutor(configuration: Self.configuration(.command([]))) } throws: {
        ($0 as? ProcessPoolError)?.code == .invalidArgument
      }
      #expect { try ProcessPoolExecutor(configuration: Self.configuration(.local(workers: 0))) } throws: {
        ($0 as? ProcessPoolError)?.code == .invalidArgument
      }
      var configuration = Self.configuration(.local(workers: 1))
      configuration.launchTimeout = .zero
      #expect { try ProcessPoolExecutor(configuration: configuration) } throws: {
        ($0 as? ProcessPoolError)?.code == .invalidArgument
      }
    }

    @Test func slurmRunsOneUnbufferedTaskPerStepWithTheUsersOptionsAndTheMarker() {
      let launcher = WorkerLauncher.slurm(
        workers: 4, arguments: ["--partition=debug", "--time=5"], executable: "/opt/app")
      let arguments = launcher.arguments!
      #expect(Array(arguments.prefix(2)) == ["/bin/sh", "-c"])
      let srun = Array(arguments.dropFirst(4))
      #expect(
        srun == [
          "srun", "--ntasks=1", "--exact", "--unbuffered", "--job-name=processpool", "--partition=debug", "--time=5",
          "env", "PROCESSPOOL_WORKER_FD=stdio", "/opt/app",
        ])
      #expect(launcher.workers == 4 && launcher.description == "slurm")
    }

    @Test func aDeployingSSHLauncherNamesTheCopyByItsHashUnderTheRemoteHome() throws {
      #expect(WorkerLauncher.remotePath("~/.cache/processpool") == "\"$HOME\"/.cache/processpool")
      #expect(WorkerLauncher.remotePath("/opt/my cache") == "'/opt/my cache'")
      let name = try #require(Deployment.copyName)
      #expect(
        name.hasPrefix("ProcessPoolPackageTests.xctest-") && name.count == "ProcessPoolPackageTests.xctest-".count + 16)
      let launcher = WorkerLauncher.ssh(host: "h", deployTo: WorkerLauncher.defaultCacheDirectory, workers: 3)
      let script = try #require(launcher.arguments?.last)
      #expect(script.contains("exec env PROCESSPOOL_WORKER_FD=stdio \"$HOME\"/.cache/processpool/\(name)"))
      #expect(launcher.description == "ssh h" && launcher.workers == 3)
    }

    @Test func sshArgumentsQuoteTheRemoteCommand() {
      let launcher = WorkerLauncher.ssh(host: "h", executable: "/opt/my app/it's", options: ["-p", "2222"])
      #expect(launcher.arguments?.first == "ssh")
      #expect(Array(launcher.arguments!.prefix(3)) == ["ssh", "-p", "2222"])
      #expect(launcher.arguments!.suffix(2) == ["h", "exec env PROCESSPOOL_WORKER_FD=stdio '/opt/my app/it'\\''s'"])
      #expect(launcher.description == "ssh h")
    }
  }
}
