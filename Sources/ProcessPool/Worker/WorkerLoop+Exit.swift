import CProcessPoolShims

#if canImport(Glibc)
  import Glibc
#endif

extension WorkerLoop {
  /// Ends a worker the parent told to stop (retired, or the pool shuts down). A worker forked by
  /// the fork server ends as Python's forked workers do (`os._exit`): its stdio flushed, but no
  /// exit handlers or library destructors, which are the server's and which faulted in pages of
  /// every loaded library (a fifth of a recycled worker's life). A spawned worker exits normally.
  static func exitStopped() -> Never {
    guard pp_forked_by_server() != 0 else { exit(0) }
    fflush(nil)
    _exit(0)
  }
}
