import CProcessPoolShims

#if canImport(Glibc)
  import Glibc
#endif

extension WorkerLauncher {
  /// Where ``ssh(host:deployTo:options:workers:)`` keeps copies of this executable by default:
  /// `~/.cache/processpool` on the remote host.
  public static let defaultCacheDirectory = "~/.cache/processpool"

  /// Workers on another host that may not have this program: the executable is copied there
  /// first, then the workers start from the copy.
  ///
  /// ```swift
  /// configuration.launchers = [.ssh(host: "node1", deployTo: WorkerLauncher.defaultCacheDirectory, workers: 8)]
  /// ```
  ///
  /// The copy is named after the program and a hash of its contents, so a host keeps one copy
  /// per build: repeated runs and concurrent pools reuse it, and a new build gets a new name.
  /// Before each worker starts, one `ssh` asks whether the copy is there; only when it is not
  /// is the executable sent (once per host at a time: starts on this machine wait for each
  /// other), written under a temporary name and renamed, so a half-copied file is never run.
  /// The remote host needs a POSIX shell, `mkdir`, `cat`, `chmod` and `mv`, and must be able to
  /// run this binary (same architecture and C library; a build with `--static-swift-stdlib`
  /// needs no Swift runtime there). The copy counts toward
  /// ``ProcessPoolExecutor/Configuration/launchTimeout``.
  ///
  /// - Parameters:
  ///   - host: What `ssh` connects to (`host`, `user@host`, or an alias from `~/.ssh/config`).
  ///   - cacheDirectory: The directory on the host for the copies, created when missing; a
  ///     leading `~/` is the remote user's home (for example ``defaultCacheDirectory``).
  ///   - options: Extra `ssh` arguments, as for ``ssh(host:executable:options:workers:)``.
  ///   - workers: How many workers to run there.
  public static func ssh(
    host: String, deployTo cacheDirectory: String, options: [String] = [], workers: Int = 1
  ) -> WorkerLauncher {
    let ssh = sshCommand(host: host, options: options).map(shellQuoted).joined(separator: " ")
    guard let name = Deployment.copyName else {
      let script = "echo \(shellQuoted("cannot read this executable (\(Deployment.source)) to deploy it")) >&2; exit 1"
      return WorkerLauncher(
        kind: .command(["/bin/sh", "-c", script]), flavor: .ssh, workers: workers, description: "ssh \(host)")
    }
    let directory = remotePath(cacheDirectory)
    let copy = remotePath(cacheDirectory + "/" + name)
    let temporary = remotePath(cacheDirectory + "/.\(name).tmp.") + "$$"
    let check = "test -x \(copy)"
    let install =
      "mkdir -p \(directory) && cat > \(temporary) && chmod 755 \(temporary) && mv -f \(temporary) \(copy)"
    let start = "exec env \(environmentMarker) \(copy)"
    // One lock per host and build on this machine, so workers starting together send
    // the program once; other machines and pools are kept apart by the rename.
    let lock = Deployment.lockFile(host: host, copy: name, directory: "${TMPDIR:-/tmp}")
    let script = """
      if command -v flock >/dev/null 2>&1; then exec 9>"\(lock)" && flock 9; fi
      if ! \(ssh) \(shellQuoted(check)) </dev/null; then
        \(ssh) \(shellQuoted(install)) <\(shellQuoted(Deployment.source)) || exit
      fi
      exec 9>&-
      exec \(ssh) \(shellQuoted(start))
      """
    return WorkerLauncher(
      kind: .command(["/bin/sh", "-c", script]), flavor: .ssh, workers: workers, description: "ssh \(host)")
  }

  /// A path for the remote shell: quoted, except that a leading `~/` becomes `"$HOME"/`.
  static func remotePath(_ path: String) -> String {
    if path.hasPrefix("~/") { return "\"$HOME\"/" + shellQuoted(String(path.dropFirst(2))) }
    return shellQuoted(path)
  }
}

/// What the ssh deployment sends: this executable, by its name and the hash of its contents.
enum Deployment {
  /// This process's executable as the kernel sees it (still readable when the file on disk was
  /// replaced by a rebuild), for the `sh` that copies it.
  static let source = "/proc/\(getpid())/exe"

  /// `<program>-<16 hex digits>`, hashed once per process; nil when the executable cannot be read.
  static let copyName: String? = {
    var hash: UInt64 = 0
    guard pp_hash_file("/proc/self/exe", &hash) == 0 else { return nil }
    let path = ProcessPoolWorker.executablePath
    let program = path.split(separator: "/").last.map(String.init) ?? "worker"
    let safe = String(program.map { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) ? $0 : "_" })
    return "\(safe)-\(hex(hash))"
  }()

  /// The file this machine's starts of workers for one host and build lock while copying.
  static func lockFile(host: String, copy name: String, directory: String) -> String {
    "\(directory)/processpool-deploy-\(hex(fnv1a(host + "\n" + name))).lock"
  }

  static func fnv1a(_ text: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 {
      hash ^= UInt64(byte)
      hash &*= 0x100_0000_01b3
    }
    return hash
  }

  static func hex(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 16 - digits.count) + digits
  }
}
