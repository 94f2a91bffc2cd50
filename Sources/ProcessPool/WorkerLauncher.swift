/// How a pool starts some of its workers, and how many it may start that way.
///
/// By default every worker is this executable started again on this machine. A launcher starts
/// workers some other way, for example on another host through `ssh`, and a pool can mix them:
///
/// ```swift
/// var configuration = ProcessPoolExecutor.Configuration()
/// configuration.launchers = [
///   .local(workers: 2),
///   .ssh(host: "build-2.example.com", workers: 8),
///   .command(["srun", "--ntasks=1", "env", "PROCESSPOOL_WORKER_FD=stdio", "/shared/bin/app"], workers: 16),
/// ]
/// let pool = try ProcessPoolExecutor(configuration: configuration)
/// ```
///
/// A worker started by a launcher speaks the pool's protocol over its standard input and output;
/// anything a task prints to standard output goes to standard error instead. It is the same
/// program (a build of the same source, with the same ``ProcessTask`` types) started with
/// ``environmentMarker`` in its environment, completed by the pool with a token that is new for
/// each worker and also comes first on the worker's standard input: only a process the pool
/// started becomes a worker. The handshake refuses a worker that speaks another protocol version. A lost connection is a crashed worker: its task fails with
/// ``ProcessPoolError/Code/workerCrashed`` and the worker is replaced like a local one. A launcher
/// whose workers keep dying before they say hello is given up after three in a row; the pool
/// breaks only when no launcher is left.
public struct WorkerLauncher: Sendable, Hashable, CustomStringConvertible {
  enum Kind: Sendable, Hashable {
    case local
    case command([String])
  }

  let kind: Kind
  /// How many workers this launcher may run at once.
  public var workers: Int
  /// A short name for messages and logs (the host for `ssh`).
  public let description: String

  /// Workers on this machine: this executable, started with `posix_spawn` and a socket pair.
  public static func local(workers: Int) -> WorkerLauncher {
    WorkerLauncher(kind: .local, workers: workers, description: "local")
  }

  /// Workers on another host, started with the system `ssh` client in batch mode (no password or
  /// host-key prompts: set up keys and known hosts first).
  ///
  /// - Parameters:
  ///   - host: What `ssh` connects to (`host`, `user@host`, or an alias from `~/.ssh/config`).
  ///   - executable: The worker program's path on that host; default: this executable's path,
  ///     right for a shared file system or the same path on every host.
  ///   - options: Extra `ssh` arguments placed before the defaults (which they override), such as
  ///     `["-i", "key", "-p", "2222"]`.
  ///   - workers: How many workers to run there.
  public static func ssh(
    host: String, executable: String = ProcessPoolWorker.executablePath, options: [String] = [], workers: Int = 1
  ) -> WorkerLauncher {
    let remote = "exec env \(WorkerLauncher.environmentMarker) \(shellQuoted(executable))"
    let defaults = [
      "-T", "-e", "none", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
      "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3",
    ]
    return WorkerLauncher(
      kind: .command(["ssh"] + options + defaults + ["--", host, remote]), workers: workers,
      description: "ssh \(host)")
  }

  /// Workers started by any command (`srun`, `kubectl exec -i`, a container runtime, …) whose
  /// standard input and output reach the worker program's.
  ///
  /// The command runs with the worker marker (``environmentMarker`` and this worker's token) added
  /// to its environment and is found through `PATH`. When it does not pass its environment on to
  /// the program it starts, put ``environmentMarker`` in the program's command line instead; the
  /// pool adds the token wherever an argument contains it: `["kubectl", "exec", "-i", "pod", "--",
  /// "env", "PROCESSPOOL_WORKER_FD=stdio", "/app/bin/app"]`.
  public static func command(_ arguments: [String], workers: Int = 1) -> WorkerLauncher {
    WorkerLauncher(kind: .command(arguments), workers: workers, description: arguments.first ?? "command")
  }

  /// The variable (with its value) that marks a process started by a launcher as a worker. The
  /// pool completes it with `:` and a token new for each worker, in the command's environment and
  /// in every argument of its command line that contains it; the worker checks that the same
  /// token comes first on its standard input. A process with a marker that has no valid token
  /// (the variable left in a user's environment) says so in one line on standard error and runs
  /// its `main` as usual.
  public static let environmentMarker = "PROCESSPOOL_WORKER_FD=stdio"

  /// The command line this launcher runs, or nil for a local worker.
  public var arguments: [String]? {
    if case .command(let arguments) = kind { return arguments }
    return nil
  }

  /// Quotes a word for a POSIX shell (the remote side of `ssh` runs its command through one).
  static func shellQuoted(_ word: String) -> String {
    if !word.isEmpty, word.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "/._-+=:,@".contains($0)) }) {
      return word
    }
    return "'" + word.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
  }
}
