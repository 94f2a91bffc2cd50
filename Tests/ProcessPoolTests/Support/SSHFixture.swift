import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// A way to reach this machine's OpenSSH server for the ssh launcher tests, with throw-away keys.
///
/// `PROCESSPOOL_TEST_SSH_HOST` (and optionally `PROCESSPOOL_TEST_SSH_OPTIONS`, split at spaces)
/// point the tests at a running server. Otherwise every connection starts the server itself in
/// inetd mode (`ProxyCommand=/usr/sbin/sshd -i`): the real sshd authenticates with a key made
/// here and runs the worker through the login shell, with nothing listening and nothing left
/// running afterwards.
enum SSHFixture {
  static let sshd = "/usr/sbin/sshd"

  /// Why the tests cannot run here, or nil when they can.
  static let unavailableReason: String? = {
    if getenv("PROCESSPOOL_TEST_SSH_HOST") != nil { return nil }
    for program in ["/usr/bin/ssh", "/usr/bin/ssh-keygen", sshd] where access(program, X_OK) != 0 {
      return "\(program) is not installed (Debian: openssh-server); the ssh launcher tests are skipped"
    }
    return nil
  }()

  static var available: Bool { unavailableReason == nil }

  static var host: String {
    getenv("PROCESSPOOL_TEST_SSH_HOST").map { String(cString: $0) } ?? "localhost"
  }

  /// The ssh options that reach the server.
  static let options: [String] = {
    if getenv("PROCESSPOOL_TEST_SSH_HOST") != nil {
      return getenv("PROCESSPOOL_TEST_SSH_OPTIONS").map { String(cString: $0).split(separator: " ").map(String.init) }
        ?? []
    }
    let directory = "/tmp/pp-ssh-\(getpid())"
    mkdir(directory, 0o700)
    if getuid() == 0 { mkdir("/run/sshd", 0o755) }  // sshd's privilege separation directory
    for key in ["host_key", "client_key"] where access("\(directory)/\(key)", F_OK) != 0 {
      _ = runProgram(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "\(directory)/\(key)"])
    }
    _ = runProgram(["/bin/cp", "\(directory)/client_key.pub", "\(directory)/authorized_keys"])
    let config = """
      HostKey \(directory)/host_key
      AuthorizedKeysFile \(directory)/authorized_keys
      StrictModes no
      UsePAM no
      PasswordAuthentication no
      KbdInteractiveAuthentication no
      PermitRootLogin prohibit-password
      LogLevel ERROR

      """
    if let file = fopen("\(directory)/sshd_config", "w") {
      fputs(config, file)
      fclose(file)
    }
    return [
      "-i", "\(directory)/client_key", "-o", "ProxyCommand=\(sshd) -i -f \(directory)/sshd_config",
      "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
    ]
  }()

  /// A launcher for `workers` workers of this test binary through ssh.
  static func launcher(workers: Int) -> WorkerLauncher {
    .ssh(host: host, options: options, workers: workers)
  }
}

/// Runs a program to its end; returns its wait status.
@discardableResult
func runProgram(_ arguments: [String]) -> Int32 {
  let argv = arguments.map { strdup($0) } + [nil]
  defer { for argument in argv { free(argument) } }
  var pid: pid_t = 0
  guard posix_spawn(&pid, arguments[0], nil, nil, argv, environ) == 0 else { return -1 }
  var status: Int32 = 0
  while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
  return status
}
