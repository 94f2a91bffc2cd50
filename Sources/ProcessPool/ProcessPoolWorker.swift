import CProcessPoolShims

#if canImport(Glibc)
  import Glibc
#endif

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
    var input: Int32 = -1
    var output: Int32 = -1
    guard pp_take_deferred_worker_fds(&input, &output) >= 0 else { return }
    WorkerLoop(input: input, output: output).run()
  }

  /// The absolute path of the running executable (what a local worker runs; the default program
  /// for ``WorkerLauncher/ssh(host:executable:options:workers:)``).
  public static var executablePath: String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard count > 0 else { return CommandLine.arguments.first ?? "" }
    return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  /// True in a process that is a pool worker (inside a task).
  public static var isWorkerProcess: Bool { WorkerLoop.isActive.load(ordering: .acquiring) }
}
