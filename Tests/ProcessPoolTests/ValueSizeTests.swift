import Synchronization
import Testing

@testable import ProcessPool

/// Issue 19, item 9: a value too large for one message fails with `valueTooLarge`, naming its
/// size and the limit, at the call site (an input) or on its future (an output); it never traps
/// the parent, kills the worker or passes for a protocol violation. The limit is lowered
/// (`Frame.sendLimit`) to try it without gigabytes, except in one test at the real limit.
extension WorkerProcessTests {
  @Suite struct ValueSizeTests {
    static let limit = 4096

    @Test func anInputTooLargeThrowsAtSubmit() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        try await withParentLimit(Self.limit) { () async throws in
          let error = Self.error { try pool.submit(Echo(), [UInt8](repeating: 1, count: 10_000)) }
          #expect(error?.code == .valueTooLarge)
          #expect(error?.message.contains("\(Self.limit)") == true)
          #expect(error?.message.contains("the input of Echo is too large") == true)
          #expect(try await pool.submit(Echo(), [1, 2, 3]).value == [1, 2, 3])
        }
      }
    }

    /// A large `[UInt8]` input, kept apart from its frame (`Job.tail`), is refused at the call
    /// site the same way.
    @Test func aLargeByteInputTooLargeThrowsAtSubmit() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let limit = SharedValues.threshold + 4096
        try await withParentLimit(limit) { () async throws in
          let error = Self.error { try pool.submit(Echo(), [UInt8](repeating: 1, count: limit)) }
          #expect(error?.code == .valueTooLarge)
          #expect(error?.message.contains("\(limit)") == true)
          #expect(error?.message.contains("the input of Echo is too large") == true)
          let fits = [UInt8](repeating: 2, count: SharedValues.threshold)
          #expect(try await pool.submit(Echo(), fits).value == fits)
        }
      }
    }

    @Test func aMapInputTooLargeFailsAtItsPosition() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        try await withParentLimit(Self.limit) { () async throws in
          let inputs = [[UInt8](repeating: 1, count: 10), [UInt8](repeating: 2, count: 10_000), [3]]
          var results: [Result<[UInt8], ProcessPoolError>] = []
          var iterator = try pool.map(Echo(), inputs, chunksize: 3).makeAsyncIterator()
          while true {
            do {
              guard let value = try await iterator.next() else { break }
              results.append(.success(value))
            } catch let error as ProcessPoolError {
              results.append(.failure(error))
            }
          }
          #expect(results.count == 3)
          #expect((try? results[0].get()) == inputs[0])
          #expect(Self.code(results[1]) == .valueTooLarge)
          #expect((try? results[2].get()) == [3])
        }
      }
    }

    @Test func anOutputTooLargeFailsItsFutureAndTheWorkerGoesOn() async throws {
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        let pid = try await pool.submit(ProcessID(), 0).value
        #expect(try await pool.submit(SetSendLimit(), Self.limit).value == Frame.maximumSize)
        do {
          _ = try await pool.submit(ZeroBytes(), 10_000).value
          Issue.record("an output past the limit must fail")
        } catch let error as ProcessPoolError {
          #expect(error.code == .valueTooLarge)
          #expect(error.message.contains("\(Self.limit)"))
        }
        // Outputs that fit one by one but not together: the one past the limit fails alone.
        let outputs = try await Self.outcomes(pool.map(ZeroBytes(), [3000, 3000, 10_000, 10], chunksize: 4))
        #expect(outputs.map { try? $0.get().count } == [3000, nil, nil, 10])
        #expect(Self.code(outputs[1]) == .valueTooLarge && Self.code(outputs[2]) == .valueTooLarge)
        #expect(try await pool.submit(ZeroBytes(), 100).value.count == 100)
        #expect(try await pool.submit(ProcessID(), 0).value == pid)
        #expect(pool.statistics.workersCrashed == 0)
      }
    }

    /// A large `[UInt8]` output, which a local worker keeps apart from its results frame until
    /// it copies it into shared memory, is refused past the limit the same way, alone in its
    /// chunk or not; one that fits arrives whole.
    @Test func aLargeByteOutputTooLargeFailsItsFuture() async throws {
      let limit = SharedValues.threshold + 4096
      try await withPool(.workers(1)) { (pool: ProcessPoolExecutor) async throws in
        _ = try await pool.submit(SetSendLimit(), limit).value
        await #expect { try await pool.submit(ZeroBytes(), limit).value } throws: {
          ($0 as? ProcessPoolError)?.code == .valueTooLarge
            && ($0 as? ProcessPoolError)?.message.contains("\(limit)") == true
        }
        let outputs = try await Self.outcomes(pool.map(ZeroBytes(), [limit, SharedValues.threshold], chunksize: 1))
        #expect(Self.code(outputs[0]) == .valueTooLarge)
        #expect(try outputs[1].get() == [UInt8](repeating: 0, count: SharedValues.threshold))
        #expect(try await pool.submit(Echo(), MakeBytes.expected(limit - 100)).value == MakeBytes.expected(limit - 100))
        #expect(pool.statistics.workersCrashed == 0)
      }
    }

    /// At the real limit of a worker's socket (1 GiB; a launched worker has nothing else, a
    /// local one takes more through shared memory, see `SharedValueTests`): the input is
    /// refused before it is copied, the output before the worker copies it. About 1 GiB of
    /// memory in each process, briefly.
    @Test func valuesJustAboveTheRealLimit() async throws {
      var configuration = ProcessPoolExecutor.Configuration()
      configuration.launchers = [.command([ProcessPoolWorker.executablePath], workers: 1)]
      try await withPool(configuration) { (pool: ProcessPoolExecutor) async throws in
        var input = [UInt8](repeating: 0, count: Frame.maximumSize + 1)
        let error = Self.error { try pool.submit(Echo(), input) }
        input = []
        #expect(error?.code == .valueTooLarge)
        #expect(error?.message.contains("\(Frame.maximumSize)") == true)
        do {
          _ = try await pool.submit(ZeroBytes(), Frame.maximumSize + 1).value
          Issue.record("an output past the limit must fail")
        } catch let error as ProcessPoolError {
          #expect(error.code == .valueTooLarge)
          #expect(error.message.contains("\(Frame.maximumSize)"))
        }
        #expect(try await pool.submit(Echo(), [7]).value == [7])
        #expect(pool.statistics.workersCrashed == 0)
      }
    }

    static func error(_ body: () throws -> some Any) -> ProcessPoolError? {
      do {
        _ = try body()
        return nil
      } catch {
        return error as? ProcessPoolError
      }
    }

    static func code<T>(_ result: Result<T, ProcessPoolError>) -> ProcessPoolError.Code? {
      if case .failure(let error) = result { return error.code }
      return nil
    }

    static func outcomes<S: AsyncSequence>(_ sequence: S) async -> [Result<S.Element, ProcessPoolError>] {
      var results: [Result<S.Element, ProcessPoolError>] = []
      var iterator = sequence.makeAsyncIterator()
      while true {
        do {
          guard let value = try await iterator.next() else { break }
          results.append(.success(value))
        } catch {
          results.append(.failure(error as? ProcessPoolError ?? ProcessPoolError(.remote, "\(error)")))
        }
      }
      return results
    }

    /// Lowers the parent's frame limits (the socket's and shared memory's) for `body` (worker
    /// suites run one test at a time).
    func withParentLimit(_ limit: Int, _ body: () async throws -> Void) async rethrows {
      let saved = Frame.sendLimit.exchange(limit, ordering: .relaxed)
      let savedShared = SharedValues.limit.exchange(limit, ordering: .relaxed)
      defer {
        Frame.sendLimit.store(saved, ordering: .relaxed)
        SharedValues.limit.store(savedShared, ordering: .relaxed)
      }
      try await body()
    }
  }
}

/// Lowers this worker's frame limits, the socket's and shared memory's (the worker is this
/// process started again, so the knobs are the same); returns the socket's it replaced.
struct SetSendLimit: ProcessTask {
  func run(_ limit: Int) async throws -> Int {
    SharedValues.limit.store(limit, ordering: .relaxed)
    return Frame.sendLimit.exchange(limit, ordering: .relaxed)
  }
}

/// `count` zero bytes, made fast (no per-byte work) so a 1 GiB output costs little time.
struct ZeroBytes: ProcessTask {
  func run(_ count: Int) async throws -> [UInt8] { [UInt8](repeating: 0, count: count) }
}

@Suite struct ByteWriterLimitTests {
  @Test func anEncodingPastItsLimitThrowsAndLeavesNothing() throws {
    let values: [any Encodable] = [
      [UInt8](repeating: 1, count: 100), [Int](repeating: 1, count: 20), [Double](repeating: 1, count: 20),
      String(repeating: "x", count: 100), [String](repeating: "abc", count: 30),
      ["k": [UInt8](repeating: 2, count: 100)],
    ]
    for value in values {
      var bytes: [UInt8] = [9, 9]
      let thrown = bytes.withByteWriter { writer -> (any Error)? in
        writer.byteLimit = 64
        do {
          try writer.appendBlock(value)
          return nil
        } catch {
          return error
        }
      }
      guard case .tooLarge(let size, let limit)? = thrown as? CodecError else {
        Issue.record("\(type(of: value)) past the limit: \(String(describing: thrown))")
        continue
      }
      #expect(size > 64 && limit == 64)
      #expect(bytes == [9, 9])
    }
  }
}
