import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// Whether the worker running it found its own type among those its fork server resolved
/// before forking it (`WorkerLoop.preparedTask`), and its pid. Used by this file only, so that
/// no other test names it first.
struct ReportPreparedType: ProcessTask {
  func run(_ input: Int) async throws -> [Int32] {
    let name = Array(try TaskTypeRegistry.name(for: Self.self).utf8)
    let prepared =
      name.withUnsafeBytes { WorkerLoop.preparedTask(named: $0) }.map(ObjectIdentifier.init)
      == ObjectIdentifier(Self.self)
    return [prepared ? 1 : 0, getpid(), Int32(input)]
  }
}

/// The task types a fork server resolves ahead: its workers find them by the bytes of their
/// name, and a type the server never saw is still found by name.
extension WorkerProcessTests.ForkServerTests {
  @Test func aWorkerFindsTheTypesItsServerPreparedAndTheOthersByName() async throws {
    var configuration = ProcessPoolExecutor.Configuration.workers(1)
    configuration.maxTasksPerChild = 1
    try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
      // The first may run in a worker forked before the type was first named: found by name.
      let first = try await pool.submit(ReportPreparedType(), 1).value
      #expect(first[2] == 1)
      // Each later one runs in a new worker; the last, at least, forked after the server
      // prepared the type.
      var pids: Set<Int32> = [first[1]]
      var report = first
      for input in 2...3 {
        report = try await pool.submit(ReportPreparedType(), input).value
        #expect(report[2] == Int32(input))
        pids.insert(report[1])
      }
      #expect(report[0] == 1)
      #expect(pids.count == 3)
    }
  }

  @Test func aSpawnedWorkerHasNoPreparedTypesAndFindsThemByName() async throws {
    // Spawned only where the backtracer's setting differs from the server's.
    guard getenv("SWIFT_BACKTRACE") == nil else { return }
    var configuration = ProcessPoolExecutor.Configuration.workers(1)
    configuration.workerBacktraces = true
    try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
      #expect(try await pool.submit(ReportPreparedType(), 4).value.first == 0)
      #expect(try await pool.submit(Square(), 4).value == 16)
    }
  }

  @Test func aPreparedTypeIsFoundByItsWholeNameOnly() {
    let name = "$s15ProcessPoolTests25ReportPreparedTypeForUnitV"
    WorkerLoop.prepare(Square.self, named: name)
    WorkerLoop.prepare(Square.self, named: name)
    let found = { (bytes: [UInt8]) in
      bytes.withUnsafeBytes { WorkerLoop.preparedTask(named: $0) }.map(ObjectIdentifier.init)
    }
    #expect(found(Array(name.utf8)) == ObjectIdentifier(Square.self))
    #expect(found(Array(name.utf8.dropLast())) == nil)
    #expect(found(Array((name + "x").utf8)) == nil)
    #expect(found([]) == nil)
  }
}
