import CProcessPoolShims
import Synchronization

/// Where the pool reports what it cannot throw at a caller: a done-callback that threw, a worker
/// that crashed and was replaced, a protocol error. The default handler writes one line to stderr.
///
/// ```swift
/// ProcessPoolLog.setHandler { level, message in myLogger.log("\(level): \(message)") }
/// ```
public enum ProcessPoolLog {
  /// How serious a report is.
  public enum Level: String, Sendable, Comparable {
    /// Worth knowing (a worker replaced after a crash).
    case warning
    /// Something failed (a callback threw, a worker broke the protocol).
    case error

    /// `warning` is below `error`, so handlers can filter with `level >= .error`.
    public static func < (lhs: Level, rhs: Level) -> Bool { lhs == .warning && rhs == .error }
  }

  /// A function that receives the pool's reports.
  public typealias Handler = @Sendable (Level, String) -> Void

  private static let handler = Mutex<Handler?>(nil)

  /// Replaces the handler; pass nil to restore the default (one line on stderr).
  public static func setHandler(_ newHandler: Handler?) {
    handler.withLock { $0 = newHandler }
  }

  static func emit(_ level: Level, _ message: String) {
    if let current = handler.withLock({ $0 }) {
      current(level, message)
    } else {
      // stderr may be a pipe nobody reads (or closed): a log line must not kill the program.
      let line = Array("ProcessPool \(level.rawValue): \(message)\n".utf8)
      line.withUnsafeBytes { _ = pp_write_stderr($0.baseAddress, UInt($0.count)) }
    }
  }
}
