import Synchronization
import Testing

@testable import ProcessPool

/// CPython's test_future.py, on `ProcessFuture` alone (fixtures made in each state).
extension WorkerProcessTests {
  @Suite struct FutureTests {
    struct OSError: Error, Equatable {}

    static func pending() -> ProcessFuture<Int> { Fixture.pending() }
    static func running() -> ProcessFuture<Int> { Fixture.running() }
    static func cancelled() -> ProcessFuture<Int> { Fixture.cancelled() }
    static func cancelledAndNotified() -> ProcessFuture<Int> { Fixture.cancelledAndNotified() }
    static func failed() -> ProcessFuture<Int> { Fixture.failed(OSError()) }
    static func successful() -> ProcessFuture<Int> { Fixture.finished(42) }

    @Test func doneCallbackWithResult() {
      let seen = Mutex<Int?>(nil)
      let future = Self.pending()
      future.addDoneCallback { f in seen.withLock { $0 = try? f.outcome?.get() } }
      future.complete(.success(5))
      #expect(seen.withLock { $0 } == 5)
    }

    @Test func doneCallbackWithException() {
      let seen = Mutex<Bool>(false)
      let future = Self.pending()
      future.addDoneCallback { f in
        if case .failure(let error)? = f.outcome, error is OSError { seen.withLock { $0 = true } }
      }
      future.complete(.failure(OSError()))
      #expect(seen.withLock { $0 })
    }

    @Test func doneCallbackWithCancel() {
      let seen = Mutex<Bool>(false)
      let future = Self.pending()
      future.addDoneCallback { f in seen.withLock { $0 = f.isCancelled } }
      #expect(future.cancel())
      #expect(seen.withLock { $0 })
    }

    @Test func doneCallbackRaises() {
      let logged = Mutex<[String]>([])
      ProcessPoolLog.setHandler { _, message in logged.withLock { $0.append(message) } }
      defer { ProcessPoolLog.setHandler(nil) }
      let raisingRan = Mutex(false)
      let secondRan = Mutex(false)
      struct Doh: Error, CustomStringConvertible { var description: String { "doh!" } }
      let future = Self.pending()
      future.addDoneCallback { _ in
        raisingRan.withLock { $0 = true }
        throw Doh()
      }
      future.addDoneCallback { _ in secondRan.withLock { $0 = true } }
      #expect(future.complete(.success(5)))
      #expect(raisingRan.withLock { $0 } && secondRan.withLock { $0 })
      #expect(logged.withLock { $0.contains { $0.contains("doh!") } })
    }

    @Test func doneCallbackAlreadyDone() {
      for (future, expectation) in [
        (Self.successful(), "ok"), (Self.failed(), "failed"), (Self.cancelled(), "cancelled"),
      ] {
        let seen = Mutex<String?>(nil)
        future.addDoneCallback { f in
          seen.withLock {
            $0 = f.isCancelled ? "cancelled" : ((try? f.outcome?.get()) == 42 ? "ok" : "failed")
          }
        }
        #expect(seen.withLock { $0 } == expectation)
      }
    }

    @Test func doneCallbackRaisesAlreadySucceeded() {
      let logged = Mutex<[String]>([])
      ProcessPoolLog.setHandler { _, message in logged.withLock { $0.append(message) } }
      defer { ProcessPoolLog.setHandler(nil) }
      struct Doh: Error {}
      Self.successful().addDoneCallback { _ in throw Doh() }
      #expect(logged.withLock { $0.contains { $0.contains("exception calling callback for") } })
    }

    @Test func description() {
      #expect(Self.pending().description.contains("state=pending"))
      #expect(Self.running().description.contains("state=running"))
      #expect(Self.cancelled().description.contains("state=cancelled"))
      #expect(Self.cancelledAndNotified().description.contains("state=cancelled"))
      #expect(Self.failed().description.contains("state=finished raised OSError"))
      #expect(Self.successful().description.contains("state=finished returned Int"))
    }

    @Test func cancel() {
      let pending = Self.pending()
      #expect(pending.cancel())
      #expect(pending.state.withLock { $0.phase } == .cancelled)
      let running = Self.running()
      #expect(!running.cancel())
      #expect(running.isRunning)
      #expect(Self.cancelled().cancel())
      let notified = Self.cancelledAndNotified()
      #expect(notified.cancel())
      #expect(notified.state.withLock { $0.phase } == .cancelledAndNotified)
      #expect(!Self.failed().cancel())
      #expect(!Self.successful().cancel())
    }

    @Test func states() {
      let all = [
        Self.pending(), Self.running(), Self.cancelled(), Self.cancelledAndNotified(), Self.failed(), Self.successful(),
      ]
      #expect(all.map(\.isCancelled) == [false, false, true, true, false, false])
      #expect(all.map(\.isDone) == [false, false, true, true, true, true])
      #expect(all.map(\.isRunning) == [false, true, false, false, false, false])
    }

    @Test func resultWithTimeout() throws {
      for future in [Self.pending(), Self.running()] {
        #expect(throws: ProcessPoolError.self) { try future.result(timeout: .zero) }
        #expect((try? future.result(timeout: .zero)) == nil)
        do {
          _ = try future.result(timeout: .zero)
        } catch let error as ProcessPoolError {
          #expect(error.code == .timedOut)
        }
      }
      for future in [Self.cancelled(), Self.cancelledAndNotified()] {
        #expect { try future.result(timeout: .zero) } throws: { ($0 as? ProcessPoolError)?.code == .cancelled }
      }
      #expect(throws: OSError.self) { try Self.failed().result(timeout: .zero) }
      #expect(try Self.successful().result(timeout: .zero) == 42)
    }

    @Test func resultWithSuccessFromAnotherThread() throws {
      let future = Self.pending()
      try OSThread.start(name: "test-setter") { future.complete(.success(42)) }
      #expect(try future.result(timeout: .seconds(30)) == 42)
    }

    @Test func resultWithCancelFromAnotherThread() throws {
      let future = Self.pending()
      try OSThread.start(name: "test-cancel") { future.cancel() }
      #expect { try future.result(timeout: .seconds(30)) } throws: { ($0 as? ProcessPoolError)?.code == .cancelled }
    }

    @Test func errorWithTimeout() throws {
      for future in [Self.pending(), Self.running()] {
        #expect { try future.error(timeout: .zero) } throws: { ($0 as? ProcessPoolError)?.code == .timedOut }
      }
      for future in [Self.cancelled(), Self.cancelledAndNotified()] {
        #expect { try future.error(timeout: .zero) } throws: { ($0 as? ProcessPoolError)?.code == .cancelled }
      }
      #expect(try Self.failed().error(timeout: .zero) is OSError)
      #expect(try Self.successful().error(timeout: .zero) == nil)
    }

    @Test func errorFromAnotherThread() throws {
      let future = Self.pending()
      try OSThread.start(name: "test-fail") { future.complete(.failure(OSError())) }
      #expect(try future.error(timeout: .seconds(30)) is OSError)
    }

    @Test func multipleSetResultKeepsTheFirst() throws {
      let future = Self.pending()
      #expect(future.complete(.success(1)))
      #expect(!future.complete(.success(2)))
      #expect(!future.complete(.failure(OSError())))
      #expect(try future.result(timeout: .zero) == 1)
    }

    @Test func valueAwaitsCompletion() async throws {
      let future = Self.pending()
      try OSThread.start(name: "test-setter") { future.complete(.success(7)) }
      #expect(try await future.value == 7)
    }

    @Test func cancellingTheAwaitingTaskCancelsAPendingFuture() async throws {
      let future = Self.pending()
      let waiter = Task { try await future.value }
      waiter.cancel()
      await #expect(throws: CancellationError.self) { try await waiter.value }
      #expect(future.isCancelled)
    }

    @Test func cancelWithoutTerminatingTheWorkerIsPlainCancel() {
      let future = Self.pending()
      #expect(future.cancel(terminatingWorker: false))
      #expect(future.isCancelled)
    }
  }
}
