import Synchronization
import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// Kills a worker (or a pool's parent process of others) with SIGKILL and waits until the pool
/// has logged its death, so that what it leaves behind can be examined. The log handler is
/// silenced again afterwards.
func killAndAwaitReport(_ pid: Int32) {
  let reaped = ConditionLock()
  let reports = Mutex(0)
  ProcessPoolLog.setHandler { _, _ in
    reaped.withLock {
      reports.withLock { $0 += 1 }
      reaped.broadcast()
    }
  }
  kill(pid, SIGKILL)
  #expect(reaped.withLock { reaped.wait(until: .now.advanced(by: .seconds(30))) { reports.withLock { $0 } > 0 } })
  ProcessPoolLog.setHandler { _, _ in }
}

/// Expects each adopted process in `orphans` to exit by itself (the test process being a
/// subreaper); one that does not is named, then killed so the test leaves nothing behind.
func expectExit(of orphans: some Sequence<Int32>, _ what: String) {
  for orphan in orphans {
    let exited = waitForExit(orphan, timeout: .seconds(10))
    #expect(exited, "process \(orphan) (\(what)) outlived its parent")
    if !exited {
      kill(orphan, SIGKILL)
      _ = waitForExit(orphan, timeout: .seconds(10))
    }
  }
}

/// Waits for an adopted child to exit, from a thread, with a deadline.
func waitForExit(_ pid: Int32, timeout: Duration) -> Bool {
  let gate = ConditionLock()
  let done = Mutex(false)
  try? OSThread.start(name: "test-reaper") {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
      if errno == EINTR { continue }
      // ECHILD: not adopted yet (its parent is still dying). Nothing signals the re-parenting,
      // so look again shortly, until it is ours to reap or gone.
      if errno != ECHILD || kill(pid, 0) != 0 { break }
      usleep(1000)
    }
    gate.withLock {
      done.withLock { $0 = true }
      gate.broadcast()
    }
  }
  return gate.withLock { gate.wait(until: .now.advanced(by: timeout)) { done.withLock { $0 } } }
}
