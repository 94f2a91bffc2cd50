/// What a state transition asks for once the pool's lock is released.
struct PoolEffects {
  /// Workers to spawn, by launcher index (already counted in `PoolState.spawning`).
  var spawns: [Int] = []
  /// Frames to write to workers, in this order (the runtime queues them on each worker's
  /// channel before the pool's lock is released, so the wire has them in the order decided).
  var writes: [Write] = []
  struct Write {
    let worker: Int
    /// One whole frame.
    let bytes: [UInt8]
    /// For a job's `run` frame, its id: the runtime may send a large one through shared memory.
    var run: UInt64? = nil
    /// The rest of a `run` frame after `bytes` (`Job.tail`): empty for most.
    var tail: [UInt8] = []
  }
  /// Workers gone for good (reaped and removed): their channels are to be closed.
  var closes: [Int] = []
  /// Futures to fail, each job with its own error value.
  var failures: [(any JobSink, ProcessPoolError)] = []
  /// Cancelled jobs the pool skipped: their futures' watchers are told (outside the lock).
  var acknowledgedCancels: [any JobSink] = []
  /// Futures to cancel (shutdown with `cancelFutures`).
  var cancellations: [any JobSink] = []
  /// A signal for a worker: through its pidfd when it has one (a pid is only safe to signal
  /// until it is reaped; a pidfd stays its process's), else to `pid` (a process group's when
  /// negative).
  struct Signal {
    let worker: Int
    let pid: Int32
    let signal: Int32
  }
  /// Signals to send to workers.
  var signals: [Signal] = []
  /// The I/O thread must look again (a new socket, new write interest, a new deadline).
  var wakeIO = false
  /// The pool reached `stopped`: wake everyone waiting for shutdown.
  var stopped = false
  /// Start the feeder thread, or wake it: the queue ran low and a source has inputs (or, to
  /// wake it, no source is left).
  var startFeeder = false
  var wakeFeeder = false
  /// Sources dropped (the pool broke, or queued work was cancelled), each with why.
  var stoppedSources: [(any JobSource, ProcessPoolError)] = []
  /// Lines for the log handler.
  var logs: [(ProcessPoolLog.Level, String)] = []
}
