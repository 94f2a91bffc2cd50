import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// Workers on "another machine": this test binary started through the system ssh client and a
/// real OpenSSH server on localhost (see `SSHFixture`).
extension WorkerProcessTests {
  @Suite(.enabled(if: SSHFixture.available, Comment(rawValue: SSHFixture.unavailableReason ?? "")))
  struct SSHLauncherTests {
    init() {
      ProcessPoolLog.setHandler { _, _ in }
    }

    static func configuration(_ launchers: WorkerLauncher...) -> ProcessPoolExecutor.Configuration {
      var configuration = ProcessPoolExecutor.Configuration()
      configuration.launchers = launchers
      return configuration
    }

    @Test func sshWorkersRunSubmitMapAndAsCompleted() async throws {
      try await withPool(Self.configuration(SSHFixture.launcher(workers: 2))) {
        (pool: ProcessPoolExecutor) async throws in
        #expect(try await pool.submit(Square(), 12).value == 144)
        var results: [Int] = []
        for try await value in try pool.map(Square(), 0..<200, chunksize: 10) { results.append(value) }
        #expect(results == (0..<200).map { $0 * $0 })
        let futures = try (0..<20).map { try pool.submit(Square(), $0) }
        var seen = 0
        for try await future in asCompleted(futures) {
          _ = try await future.value
          seen += 1
        }
        #expect(seen == 20)
        #expect(try await pool.submit(PrintToStandardOutput(), 1).value == 1)
        await #expect(throws: DivisionByZero(dividend: 1)) { try await pool.submit(Divide(divisor: 0), 1).value }
        #expect(pool.statistics.workersCrashed == 0)
      }
    }

    @Test func aLocalAndAnSSHWorkerShareOnePool() async throws {
      let configuration = Self.configuration(.local(workers: 1), SSHFixture.launcher(workers: 1))
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let held = try (0..<2).map { try pool.submit(gate.task, $0) }
        #expect(await gate.waitForArrivals(2))
        #expect(pool.statistics.workersStarted == 2)
        gate.open()
        for (index, future) in held.enumerated() { #expect(try await future.value == index) }
      }
    }

    @Test func aLostConnectionIsACrashedWorker() async throws {
      try await withPool(Self.configuration(SSHFixture.launcher(workers: 1))) {
        (pool: ProcessPoolExecutor) async throws in
        let gate = TestGate()
        defer { gate.close() }
        let running = try pool.submit(gate.task, 1)
        #expect(await gate.waitForArrivals(1))
        // The ssh client is the local end of the connection: kill it.
        kill(pool.workerPIDs[0], SIGKILL)
        await #expect { try await running.value } throws: {
          let error = $0 as? ProcessPoolError
          return error?.code == .workerCrashed && error!.message.contains("(ssh \(SSHFixture.host))")
            && error?.termination == .signaled(SIGKILL)
        }
        #expect(try await pool.submit(Square(), 5).value == 25)
        #expect(pool.statistics.workersStarted == 2)
      }
    }

    @Test func aTimeoutStopsAnSSHWorker() async throws {
      try await withPool(Self.configuration(SSHFixture.launcher(workers: 1))) {
        (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(Sleep(), 600_000, timeout: .milliseconds(300)).value } throws: {
          ($0 as? ProcessPoolError)?.code == .taskTimedOut
        }
        #expect(try await pool.submit(Square(), 6).value == 36)
      }
    }

    @Test(.enabled(if: getenv("PROCESSPOOL_TEST_SSH_HOST") == nil, "reads the copy on this machine"))
    func deploymentCopiesTheExecutableOnceAndWorkersRunTheCopy() async throws {
      let cache = "/tmp/pp-deploy-\(getpid())"
      runProgram(["/bin/rm", "-rf", cache])
      defer { runProgram(["/bin/rm", "-rf", cache]) }
      let name = try #require(Deployment.copyName)
      let copy = "\(cache)/\(name)"
      let temporary = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
      defer { unlink(Deployment.lockFile(host: SSHFixture.host, copy: name, directory: temporary)) }
      let launcher = WorkerLauncher.ssh(host: SSHFixture.host, deployTo: cache, options: SSHFixture.options, workers: 2)
      var copies: [stat] = []
      for _ in 0..<2 {
        try await withPool(Self.configuration(launcher)) { (pool: ProcessPoolExecutor) async throws in
          let gate = TestGate()
          defer { gate.close() }
          // Both workers started (at the same time) and run the copy.
          let held = try (0..<2).map { try pool.submit(gate.task, $0) }
          #expect(await gate.waitForArrivals(2))
          gate.open()
          for (index, future) in held.enumerated() { #expect(try await future.value == index) }
          let pids = try await Set(pool.map(ProcessID(), 0..<20, chunksize: 1).reduce(into: []) { $0.append($1) })
          for pid in pids { #expect(readLink("/proc/\(pid)/exe") == copy) }
          #expect(pool.statistics.workersStarted == 2 && pool.statistics.workersFailedToStart == 0)
        }
        var info = stat()
        #expect(stat(copy, &info) == 0)
        copies.append(info)
        // Nothing half-copied is left beside it.
        #expect(directoryEntries(cache) == [name])
      }
      // The second pool found the copy and sent nothing: the same file, not rewritten.
      #expect(copies[0].st_ino == copies[1].st_ino)
      #expect(
        copies[0].st_mtim.tv_sec == copies[1].st_mtim.tv_sec && copies[0].st_mtim.tv_nsec == copies[1].st_mtim.tv_nsec)
      #expect(copies[0].st_mode & 0o111 != 0)
    }

    @Test func anUnreachableHostBreaksThePoolWithSSHsExitStatus() async throws {
      // ssh itself fails (the proxy command exits at once), as for a host that does not answer.
      let launcher = WorkerLauncher.ssh(host: "localhost", options: ["-o", "ProxyCommand=false"])
      try await withPool(Self.configuration(launcher)) { (pool: ProcessPoolExecutor) async throws in
        await #expect { try await pool.submit(Square(), 2).value } throws: {
          let error = $0 as? ProcessPoolError
          return error?.code == .brokenPool && error!.message.contains("(ssh localhost) in a row died while starting")
            && error?.termination == .exited(255)
        }
      }
    }
  }
}

/// Where a symbolic link points, or nil.
func readLink(_ path: String) -> String? {
  var buffer = [CChar](repeating: 0, count: 4096)
  let count = readlink(path, &buffer, buffer.count - 1)
  guard count > 0 else { return nil }
  return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// The names in a directory, without "." and "..", sorted.
func directoryEntries(_ path: String) -> [String] {
  guard let directory = opendir(path) else { return [] }
  defer { closedir(directory) }
  var names: [String] = []
  while let entry = readdir(directory) {
    let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    if name != "." && name != ".." { names.append(name) }
  }
  return names.sorted()
}
