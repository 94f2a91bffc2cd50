import CProcessPoolShims

/// The worker side of a pool, for the one case that needs a line of code.
///
/// In a normal (dynamically linked) build a worker process starts its loop before `main` runs and
/// nothing is needed. A build linked with `--static-swift-stdlib` cannot run Swift concurrency
/// that early, so call ``bootstrap()`` first in `main`:
///
/// ```swift
/// @main struct App {
///     static func main() async throws {
///         ProcessPoolWorker.bootstrap()   // first line: turns a worker process into a worker
///         ...
///     }
/// }
/// ```
///
/// Without it, such a pool fails at once with ``ProcessPoolError/Code/workerStartFailed`` and a
/// message that says to add this line.
public enum ProcessPoolWorker {
  /// In a process started as a pool worker whose loop has not run yet, runs it and never returns;
  /// anywhere else returns at once.
  public static func bootstrap() {
    let fd = pp_take_deferred_worker_fd()
    guard fd >= 0 else { return }
    WorkerLoop(fd: fd).run()
  }

  /// True in a process that is a pool worker (inside a task).
  public static var isWorkerProcess: Bool { WorkerLoop.isActive.load(ordering: .acquiring) }
}
