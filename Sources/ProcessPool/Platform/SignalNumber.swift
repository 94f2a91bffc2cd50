#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// The signals the pool sends its workers, named for the state machine (`Scheduler/`), which
/// imports no system module: nothing there can block or do I/O.
enum SignalNumber {
  static let terminate: Int32 = SIGTERM
  static let kill: Int32 = SIGKILL
}
