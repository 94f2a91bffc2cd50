import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// Workers on a real Slurm cluster: this test binary as `srun` job steps (see `SlurmFixture`).
/// Every test also checks that no job of its workers is left in `squeue` afterwards.
extension WorkerProcessTests {
  @Suite(.enabled(if: SlurmFixture.available, Comment(rawValue: SlurmFixture.unavailableReason ?? "")))
  struct SlurmLauncherTests {
    init() throws {
      ProcessPoolLog.setHandler { _, _ in }
      try #require(SlurmFixture.clusterProblem == nil, Comment(rawValue: SlurmFixture.clusterProblem ?? ""))
    }

    static func configuration(_ launchers: WorkerLauncher...) -> ProcessPoolExecutor.Configuration {
      var configuration = ProcessPoolExecutor.Configuration()
      configuration.launchers = launchers
      return configuration
    }

    static func expectNoJobsLeft(sourceLocation: SourceLocation = #_sourceLocation) {
      let left = SlurmFixture.jobsLeft()
      #expect(left.isEmpty, "Slurm jobs left behind: \(left)", sourceLocation: sourceLocation)
    }

    @Test func slurmWorkersRunSubmitAndMapInJobSteps() async throws {
      try await withPool(Self.configuration(SlurmFixture.launcher(workers: 2))) {
        (pool: ProcessPoolExecutor) async throws in
        #expect(try await pool.submit(Square(), 12).value == 144)
        var results: [Int] = []
        for try await value in try pool.map(Square(), 0..<200, chunksize: 10) { results.append(value) }
        #expect(results == (0..<200).map { $0 * $0 })
        let jobs = try await Set(pool.map(SlurmJobID(), 0..<20, chunksize: 1).reduce(into: []) { $0.append($1) })
        #expect(!jobs.contains("") && jobs.count <= 2, "the workers ran in jobs \(jobs)")
        #expect(try await pool.submit(PrintToStandardOutput(), 1).value == 1)
        await #expect(throws: DivisionByZero(dividend: 1)) { try await pool.submit(Divide(divisor: 0), 1).value }
        #expect(pool.statistics.workersCrashed == 0)
      }
      Self.expectNoJobsLeft()
    }

    @Test func aLocalAndASlurmWorkerShareOnePool() async throws {
      let configuration = Self.configuration(.local(workers: 1), SlurmFixture.launcher(workers: 1))
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let held = try (0..<2).map { try pool.submit(gate.task, $0) }
        #expect(await gate.waitForArrivals(2))
        #expect(pool.statistics.workersStarted == 2)
        gate.open()
        for (index, future) in held.enumerated() { #expect(try await future.value == index) }
        let jobs = try await Set(pool.map(SlurmJobID(), 0..<40, chunksize: 1).reduce(into: []) { $0.append($1) })
        #expect(jobs.contains("") && jobs.count == 2, "one local and one Slurm worker, not \(jobs)")
      }
      Self.expectNoJobsLeft()
    }

    @Test func insideAnAllocationTheWorkersAreStepsOfItSideBySide() async throws {
      // An allocation as salloc or sbatch make one; srun joins it through --jobid, as it does
      // through SLURM_JOB_ID in a program that salloc or sbatch started.
      let name = "\(SlurmFixture.jobName)-allocation"
      try #require(
        runProgram(["/usr/bin/salloc", "--no-shell", "--quiet", "--ntasks=2", "--time=5", "--job-name=\(name)"]) == 0)
      defer { runProgram(["/usr/bin/scancel", "--name=\(name)"]) }
      let allocation = try #require(
        captureOutput(["/usr/bin/squeue", "--noheader", "--name=\(name)", "--format=%i"])?.split(separator: "\n").first
          .map(String.init))
      let launcher = WorkerLauncher.slurm(workers: 2, arguments: ["--jobid=\(allocation)"])
      try await withPool(Self.configuration(launcher)) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        // Both steps run at once (each on its own share of the allocation, not queued behind the other).
        let held = try (0..<2).map { try pool.submit(gate.task, $0) }
        #expect(await gate.waitForArrivals(2))
        gate.open()
        for (index, future) in held.enumerated() { #expect(try await future.value == index) }
        let jobs = try await Set(pool.map(SlurmJobID(), 0..<20, chunksize: 1).reduce(into: []) { $0.append($1) })
        #expect(jobs == [allocation])
      }
      // Its steps ended with the pool; the allocation is still there until it is cancelled.
      let steps = SlurmFixture.stepsLeft(of: allocation)
      #expect(steps.isEmpty, "steps left in the allocation: \(steps)")
    }

    @Test func aCrashBehindSrunFailsOnlyItsTaskWithTheTasksStatus() async throws {
      try await withPool(Self.configuration(SlurmFixture.launcher(workers: 1))) {
        (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(Crash(), .exit).value } throws: {
          let error = $0 as? ProcessPoolError
          return error?.code == .workerCrashed && error!.message.contains("(slurm)")
            && error?.termination == .exited(99)
        }
        // srun reports a task ended by a signal as 128 plus the signal.
        await #expect { try await pool.submit(Crash(), .segfault).value } throws: {
          ($0 as? ProcessPoolError)?.termination == .exited(128 + SIGSEGV)
        }
        #expect(try await pool.submit(Square(), 3).value == 9)
        #expect(pool.statistics.workersCrashed == 2)
      }
      Self.expectNoJobsLeft()
    }

    @Test func aTaskTimeoutStopsItsStep() async throws {
      try await withPool(Self.configuration(SlurmFixture.launcher(workers: 1))) {
        (pool: ProcessPoolExecutor) async throws in
        let job = try await pool.submit(SlurmJobID(), 0).value
        #expect(!job.isEmpty)
        await #expect { try await pool.submit(Sleep(), 600_000, timeout: .milliseconds(300)).value } throws: {
          ($0 as? ProcessPoolError)?.code == .taskTimedOut
        }
        // The pool still runs (its new worker is another job): the stopped one must be gone.
        let left = SlurmFixture.jobsLeft(matching: job)
        #expect(left.isEmpty, "the timed-out worker's job is still there: \(left)")
        #expect(try await pool.submit(Square(), 6).value == 36)
        #expect(try await pool.submit(SlurmJobID(), 0).value != job)
      }
      Self.expectNoJobsLeft()
    }

    @Test func cancellingAndKillingWorkersLeaveNoStep() async throws {
      var configuration = Self.configuration(SlurmFixture.launcher(workers: 3))
      configuration.jobsPerWorker = 1
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let held = try (0..<3).map { try pool.submit(gate.task, $0) }
        #expect(await gate.waitForArrivals(3))
        #expect(held[0].cancel(terminatingWorker: true))
        await #expect { try await held[0].value } throws: { ($0 as? ProcessPoolError)?.code == .cancelled }
        // SIGKILL reaches only the shell in front of srun; srun gets SIGTERM and ends its step.
        pool.killWorkers()
        for future in held.dropFirst() {
          await #expect { try await future.value } throws: { $0 is ProcessPoolError }
        }
      }
      Self.expectNoJobsLeft()
    }

    @Test func terminatingWorkersLeavesNoStep() async throws {
      try await withPool(Self.configuration(SlurmFixture.launcher(workers: 2))) {
        (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let held = try (0..<2).map { try pool.submit(gate.task, $0) }
        #expect(await gate.waitForArrivals(2))
        pool.terminateWorkers()
        for future in held {
          await #expect { try await future.value } throws: { $0 is ProcessPoolError }
        }
      }
      Self.expectNoJobsLeft()
    }

    @Test func shutdownLeavesNoStep() async throws {
      try await withPool(Self.configuration(SlurmFixture.launcher(workers: 2))) {
        (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let held = try (0..<2).map { try pool.submit(gate.task, $0) }
        #expect(await gate.waitForArrivals(2))
        #expect(SlurmFixture.jobs().count == 2, "each worker is a job: \(SlurmFixture.jobs())")
        gate.open()
        for (index, future) in held.enumerated() { #expect(try await future.value == index) }
      }
      Self.expectNoJobsLeft()
    }

    @Test func srunWithoutUnbufferedOutputFailsAtTheLaunchTimeoutWithAdvice() async throws {
      // srun holds the task's output until a newline, so the hello never arrives.
      var configuration = Self.configuration(
        .command(["srun", "--ntasks=1", "--job-name=\(SlurmFixture.jobName)", ProcessPoolWorker.executablePath]))
      configuration.launchTimeout = .seconds(2)
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(Square(), 2).value } throws: {
          let error = $0 as? ProcessPoolError
          return error?.code == .brokenPool && error!.message.contains("no hello from `srun --ntasks=1 ")
            && error!.message.contains("within 2 s: is its output buffered? for srun use `.slurm` or `-u`")
        }
        #expect(pool.statistics.workersFailedToStart == 3)
      }
      // The broken pool SIGKILLs its last worker, and a plain srun cannot pass SIGKILL on: its
      // job may stay (which is what `.slurm` prevents). Cancel what is left.
      SlurmFixture.cancelJobs()
      Self.expectNoJobsLeft()
    }
  }
}
