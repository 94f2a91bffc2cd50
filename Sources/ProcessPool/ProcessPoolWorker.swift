#if canImport(Glibc)
  import Glibc
#endif

/// The worker side of a pool: what a program can ask about it.
///
/// No line of code makes a process a worker. A worker is this executable started again, and it
/// enters its loop before `main` runs, so the program's `main` never runs in a worker: in a
/// dynamically linked build, and in a build linked with `--static-swift-stdlib` too (there the
/// pool's hook runs the executable's remaining initialisers, Swift concurrency's among them, before
/// the loop). An executable whose workers cannot do that (a static build linked without
/// `__init_array_start`) is refused when a pool with local workers is created, with
/// ``ProcessPoolError/Code/workerStartFailed``, before any worker is started.
public enum ProcessPoolWorker {
  /// Does nothing: kept so that programs written for earlier versions, which called it first in
  /// `main` of a statically linked build, still build. Workers no longer need it.
  public static func bootstrap() {}

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
