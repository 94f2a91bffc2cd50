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
///   .ssh(host: "build-3.example.com", deployTo: WorkerLauncher.defaultCacheDirectory, workers: 8),
///   .slurm(workers: 16, arguments: ["--partition=compute", "--time=60"]),
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
/// whose workers keep dying before they say hello, or stay silent past
/// ``ProcessPoolExecutor/Configuration/launchTimeout``, is given up after three in a row; the pool
/// breaks only when no launcher is left.
public struct WorkerLauncher: Sendable, Hashable, CustomStringConvertible {
  enum Kind: Sendable, Hashable {
    case local
    case command([String])
  }

  /// What the launcher is, for the advice in a start-up error.
  enum Flavor: Sendable, Hashable {
    case local, command, ssh, slurm
  }

  let kind: Kind
  let flavor: Flavor
  /// How many workers this launcher may run at once.
  public var workers: Int
  /// A short name for messages and logs (the host for `ssh`).
  public let description: String

  /// Workers on this machine: this executable, started with `posix_spawn` and a socket pair.
  public static func local(workers: Int) -> WorkerLauncher {
    WorkerLauncher(kind: .local, flavor: .local, workers: workers, description: "local")
  }

  /// Workers on another host, started with the system `ssh` client in batch mode (no password or
  /// host-key prompts: set up keys and known hosts first). The program must be there already;
  /// ``ssh(host:deployTo:options:workers:)`` copies it there instead.
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
    return WorkerLauncher(
      kind: .command(sshCommand(host: host, options: options) + [remote]), flavor: .ssh, workers: workers,
      description: "ssh \(host)")
  }

  /// Workers started by any command (`kubectl exec -i`, a container runtime, …) whose standard
  /// input and output reach the worker program's, unbuffered. For Slurm use
  /// ``slurm(workers:arguments:executable:)``: a plain `srun` buffers the worker's output until a
  /// newline, so its worker never says hello (and is stopped at
  /// ``ProcessPoolExecutor/Configuration/launchTimeout``).
  ///
  /// The command runs with the worker marker (``environmentMarker`` and this worker's token) added
  /// to its environment and is found through `PATH`. When it does not pass its environment on to
  /// the program it starts, put ``environmentMarker`` in the program's command line instead; the
  /// pool adds the token wherever an argument contains it: `["kubectl", "exec", "-i", "pod", "--",
  /// "env", "PROCESSPOOL_WORKER_FD=stdio", "/app/bin/app"]`.
  public static func command(_ arguments: [String], workers: Int = 1) -> WorkerLauncher {
    WorkerLauncher(
      kind: .command(arguments), flavor: .command, workers: workers, description: arguments.first ?? "command")
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

  /// `ssh` with the options and the batch-mode defaults, up to the host (the remote command follows).
  static func sshCommand(host: String, options: [String]) -> [String] {
    let defaults = [
      "-T", "-e", "none", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
      "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3",
    ]
    return ["ssh"] + options + defaults + ["--", host]
  }

  /// Why a worker of this launcher sent no hello within `timeout`, and what to check.
  func launchTimeoutMessage(after timeout: Duration) -> String {
    let shown: String
    let advice: String
    switch flavor {
    case .slurm:
      // The command is `sh -c SCRIPT srun srun …`: show the srun part.
      shown = Self.commandLine(Array((arguments ?? []).dropFirst(4)))
      advice =
        "is the job still waiting in the queue (squeue)? raise Configuration.launchTimeout, or set it to nil"
    case .ssh:
      shown = description
      advice = "is the host or the program slow to start (or the executable still being copied there)?"
    case .command, .local:
      shown = Self.commandLine(arguments ?? [])
      advice = "is its output buffered? for srun use `.slurm` or `-u`"
    }
    return "no hello from `\(shown)` within \(Self.describe(timeout)): \(advice)"
  }

  /// A command line for a message, shortened to about 100 characters.
  static func commandLine(_ words: [String]) -> String {
    let line = words.map(shellQuoted).joined(separator: " ")
    return line.count <= 100 ? line : String(line.prefix(99)) + "…"
  }

  /// "60 s", "1.5 s" or "250 ms".
  static func describe(_ duration: Duration) -> String {
    let (seconds, attoseconds) = duration.components
    let milliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
    if milliseconds % 1000 == 0 { return "\(milliseconds / 1000) s" }
    if milliseconds >= 1000 { return "\(Double(milliseconds) / 1000) s" }
    return "\(milliseconds) ms"
  }

  /// Quotes a word for a POSIX shell (the remote side of `ssh` runs its command through one).
  static func shellQuoted(_ word: String) -> String {
    if !word.isEmpty, word.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "/._-+=:,@".contains($0)) }) {
      return word
    }
    return "'" + word.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
  }
}
