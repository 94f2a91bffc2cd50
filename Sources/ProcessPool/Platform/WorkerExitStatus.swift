import CProcessPoolShims

/// The exit statuses a worker uses for itself (`PP_EXIT_*` in CProcessPoolShims.h, where the C
/// entry uses them too), named for the state machine (`Scheduler/`), which imports no module.
enum WorkerExitStatus {
  static let initializerFailed: Int32 = PP_EXIT_INITIALIZER_FAILED
  static let noThread: Int32 = PP_EXIT_NO_THREAD
  static let unexpectedFrame: Int32 = PP_EXIT_UNEXPECTED_FRAME
  static let readFailed: Int32 = PP_EXIT_READ_FAILED
  static let replyFailed: Int32 = PP_EXIT_REPLY_FAILED
  static let noStandardIO: Int32 = PP_EXIT_NO_STDIO
  static let noRing: Int32 = PP_EXIT_NO_RING
  static let noEntry: Int32 = PP_EXIT_NO_ENTRY
}
