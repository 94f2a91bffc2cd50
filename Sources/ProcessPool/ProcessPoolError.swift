/// The one error type of the package.
///
/// Switch on ``code``; ``message`` says what happened in words, and the optional fields carry the
/// details that apply (the worker's pid and how it ended, a remote error's type name).
///
/// ```swift
/// do {
///     _ = try await future.value
/// } catch let error as ProcessPoolError where error.code == .workerCrashed {
///     print("worker \(error.workerPID ?? 0) died: \(error.termination!)")
/// }
/// ```
public struct ProcessPoolError: Error, Sendable, Hashable, Codable, CustomStringConvertible {
  /// What kind of failure this is.
  public struct Code: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The raw name of the code, stable across versions.
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// The pool is broken (a crash under ``ProcessPoolExecutor/CrashPolicy/breakPool``, a failing
    /// initializer, or workers that keep dying at start); it accepts no more work.
    public static let brokenPool = Code("brokenPool")
    /// The worker running this task died; ``termination`` says how.
    public static let workerCrashed = Code("workerCrashed")
    /// The task ran past its per-task timeout and its worker was stopped.
    public static let taskTimedOut = Code("taskTimedOut")
    /// Waiting for a result took longer than the caller's timeout (the task may still run).
    public static let timedOut = Code("timedOut")
    /// The future was cancelled.
    public static let cancelled = Code("cancelled")
    /// The pool is shut down and accepts no more work.
    public static let shutDown = Code("shutDown")
    /// The task's type cannot be found by name in a worker (a private, fileprivate or local type).
    public static let unknownTaskType = Code("unknownTaskType")
    /// A value could not be encoded.
    public static let encodingFailed = Code("encodingFailed")
    /// A value (an input, a `map` chunk's inputs, a task's output) encodes to more than one
    /// message between the pool and a worker can carry (1 GiB); the message names both sizes.
    public static let valueTooLarge = Code("valueTooLarge")
    /// A value could not be decoded.
    public static let decodingFailed = Code("decodingFailed")
    /// A worker sent something that is not the protocol, or of another version.
    public static let protocolViolation = Code("protocolViolation")
    /// The task threw an error that cannot be rebuilt in the parent; ``remoteTypeName`` names it.
    public static let remote = Code("remote")
    /// A worker could not be started (spawn failed, or the worker loop never ran).
    public static let workerStartFailed = Code("workerStartFailed")
    /// An argument was out of range (for example `maxWorkers <= 0`).
    public static let invalidArgument = Code("invalidArgument")
    /// The call would wait for something only the calling thread can bring about (for example
    /// `result()` on an unfinished future from a done-callback, which runs on the pool's I/O
    /// thread).
    public static let wouldDeadlock = Code("wouldDeadlock")

    /// The code's name, as in `workerCrashed`.
    public var description: String { rawValue }
  }

  /// How a worker process ended.
  public enum Termination: Hashable, Sendable, Codable, CustomStringConvertible {
    /// It exited with this status.
    case exited(Int32)
    /// It was killed by this signal.
    case signaled(Int32)

    /// "exit code 3" or "signal 9 (SIGKILL)".
    public var description: String {
      switch self {
      case .exited(let code): return "exit code \(code)"
      case .signaled(let signal): return "signal \(signal)\(Termination.signalName(signal).map { " (\($0))" } ?? "")"
      }
    }

    static func signalName(_ signal: Int32) -> String? {
      let names: [Int32: String] = [
        1: "SIGHUP", 2: "SIGINT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE",
        9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM",
      ]
      return names[signal]
    }
  }

  /// The kind of failure.
  public var code: Code
  /// What happened, in words.
  public var message: String
  /// The worker involved, when there is one.
  public var workerPID: Int32?
  /// How that worker ended, when it did.
  public var termination: Termination?
  /// For ``Code/remote``: the type name of the error the task threw.
  public var remoteTypeName: String?
  /// For a worker that died (``Code/workerCrashed``, and ``Code/brokenPool`` when its death broke
  /// the pool): the last lines it wrote to its stderr (at most about 8 KiB), such as a
  /// `fatalError` message, a failed `precondition`, or the runtime's crash report. Nil when it
  /// wrote nothing or its stderr is not read (``ProcessPoolExecutor/WorkerStandardError/inherit``).
  public var crashReport: String?

  /// Creates an error; the pool makes these, tests and wrappers may too.
  public init(
    _ code: Code, _ message: String, workerPID: Int32? = nil, termination: Termination? = nil,
    remoteTypeName: String? = nil, crashReport: String? = nil
  ) {
    self.code = code
    self.message = message
    self.workerPID = workerPID
    self.termination = termination
    self.remoteTypeName = remoteTypeName
    self.crashReport = crashReport
  }

  /// The message, prefixed by the code, with the worker's pid and how it ended when known, and
  /// the line of the crash report that says why (`Fatal error: …`) when there is one.
  public var description: String {
    var text = "ProcessPoolError.\(code): \(message)"
    if let remoteTypeName { text += " [\(remoteTypeName)]" }
    if let workerPID { text += " (worker \(workerPID)" + (termination.map { ", \($0))" } ?? ")") }
    if let reason = crashReport.flatMap(Self.reason(inReport:)) { text += ": \(reason)" }
    return text
  }

  /// The line of a crash report that says why: the runtime's own message (`Fatal error`,
  /// `Precondition failed`, …) when there is one, else the last line that is not empty.
  /// Searched as UTF-8 bytes: the pool does this for every crashed worker, on its I/O thread.
  static func reason(inReport report: String) -> String? {
    var report = report
    return report.withUTF8 { bytes in
      let lines = crashReportLines(bytes)
      for marker in crashReportMarkers {
        if let line = lines.first(where: { contains(UnsafeBufferPointer(rebasing: bytes[$0]), marker) }) {
          return String(decoding: UnsafeBufferPointer(rebasing: bytes[line]), as: UTF8.self)
        }
      }
      return lines.last.map { String(decoding: UnsafeBufferPointer(rebasing: bytes[$0]), as: UTF8.self) }
    }
  }

  private static let crashReportMarkers = [
    "Fatal error", "Precondition failed", "Assertion failed", "Unexpectedly found nil", "Fatal access conflict",
    "Program crashed", "fatal error", "error:",
  ].map { Array($0.utf8) }

  /// The byte ranges of the report's lines that are not empty once spaces and tabs are trimmed.
  /// A line ends at LF, VT, FF or CR, or at NEL, LS or PS (as `Character.isNewline`).
  private static func crashReportLines(_ bytes: UnsafeBufferPointer<UInt8>) -> [Range<Int>] {
    var lines: [Range<Int>] = []
    var start = 0
    var index = 0
    func endLine(at end: Int) {
      var lower = start
      var upper = end
      while lower < upper && (bytes[lower] == 0x20 || bytes[lower] == 0x09) { lower += 1 }
      while upper > lower && (bytes[upper - 1] == 0x20 || bytes[upper - 1] == 0x09) { upper -= 1 }
      if lower < upper { lines.append(lower..<upper) }
    }
    while index < bytes.count {
      let byte = bytes[index]
      var separator = 0
      if byte >= 0x0A && byte <= 0x0D {
        separator = 1
      } else if byte == 0xC2 && index + 1 < bytes.count && bytes[index + 1] == 0x85 {
        separator = 2
      } else if byte == 0xE2 && index + 2 < bytes.count && bytes[index + 1] == 0x80
        && (bytes[index + 2] == 0xA8 || bytes[index + 2] == 0xA9)
      {
        separator = 3
      }
      if separator > 0 {
        endLine(at: index)
        index += separator
        start = index
      } else {
        index += 1
      }
    }
    endLine(at: bytes.count)
    return lines
  }

  private static func contains(_ line: UnsafeBufferPointer<UInt8>, _ marker: [UInt8]) -> Bool {
    guard line.count >= marker.count else { return false }
    search: for offset in 0...(line.count - marker.count) {
      for index in marker.indices where line[offset + index] != marker[index] { continue search }
      return true
    }
    return false
  }
}
