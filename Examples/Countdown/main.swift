// The countdown from Python's concurrent.futures docs: the same CPU-bound work run serially in
// this process and in parallel on a process pool, printed side by side.
//
//   swift run -c release Countdown [n] [tasks]
import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

// CI sets COUNTDOWN_MAIN_LOG to check that `main` runs once, in this process, and never in a
// worker (workers of every build, a --static-swift-stdlib one too, start their loop before it).
if let log = getenv("COUNTDOWN_MAIN_LOG") {
  let fd = open(log, O_WRONLY | O_APPEND | O_CREAT, 0o644)
  var line = Array("main ran in \(getpid())\n".utf8)
  _ = write(fd, &line, line.count)
  close(fd)
}

/// Counts down from its input: pure CPU work, no I/O. Each step also mixes a 64-bit state (a
/// non-linear recurrence), so the optimiser cannot replace the loop by its result.
struct Countdown: ProcessTask {
  func run(_ n: Int) async throws -> Int {
    var n = n
    var state: UInt64 = 1
    while n > 0 {
      state = (state ^ (state >> 31)) &* 0xbf58_476d_1ce4_e5b9 &+ 1
      n -= 1
    }
    return Int(truncatingIfNeeded: state >> 60)
  }
}

/// A progress line: a bar redrawn in place on a terminal, plain lines (at most one per tenth)
/// when the output goes to a file or a pipe.
func showProgress(_ progress: ProcessPoolProgress) {
  guard let fraction = progress.fractionFinished else { return }
  let line: String
  if isatty(1) == 1 {
    let filled = Int(fraction * 30)
    line =
      "\r[" + String(repeating: "#", count: filled) + String(repeating: ".", count: 30 - filled) + "] \(progress)"
      + (progress.isFinished ? "\n" : "")
  } else {
    let total = progress.total ?? 1
    // The items where the tenth changes, and the last one.
    guard progress.finished * 10 / total != (progress.finished - 1) * 10 / total || progress.isFinished else { return }
    line = "progress: \(progress)\n"
  }
  var bytes = Array(line.utf8)
  _ = write(1, &bytes, bytes.count)
}

func seconds(_ duration: Duration) -> Double {
  Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func format(_ value: Double) -> String {
  let hundredths = Int((value * 100).rounded())
  let fraction = hundredths % 100
  return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
}

let arguments = CommandLine.arguments.dropFirst().compactMap { Int($0) }
let n = arguments.first ?? 20_000_000
let clock = ContinuousClock()

// The pool lives for this closure: it is shut down, and every worker reaped, when the closure
// returns or throws (and cancelling the enclosing task would stop its running work).
let (workers, tasks, serial, parallel, unordered, completed) = try await withProcessPool { pool in
  let workers = pool.configuration.maxWorkers
  let tasks = arguments.dropFirst().first ?? workers * 4
  let inputs = Array(repeating: n, count: tasks)

  // Serial: one countdown after another in this process.
  var serialSum = 0
  let serial = try await clock.measure {
    for input in inputs { serialSum &+= try await Countdown().run(input) }
  }

  // Parallel: `map` yields the results in input order; chunksize 1 because each task is long.
  // The progress handler draws a live progress line (counting costs nothing when it is left out).
  var parallelSum = 0
  let parallel = try await clock.measure {
    for try await result in try pool.map(Countdown(), inputs, chunksize: 1, progress: showProgress) {
      parallelSum &+= result
    }
  }
  precondition(serialSum == parallelSum, "the pool must compute what the serial loop does")

  // Unordered: `mapUnordered` yields each result as soon as it is ready, with its input's
  // position; every position comes once.
  var seen = Set<Int>()
  var unorderedSum = 0
  let unordered = try await clock.measure {
    for try await (index, result) in try pool.mapUnordered(Countdown(), inputs, chunksize: 1) {
      seen.insert(index)
      unorderedSum &+= result
    }
  }
  precondition(seen.count == tasks && unorderedSum == serialSum, "every input once, with the same results")

  // asCompleted: the same work submitted one by one, taken in the order it finishes.
  var finished = 0
  let completed = try await clock.measure {
    let futures = try inputs.map { try pool.submit(Countdown(), $0) }
    for try await future in asCompleted(futures) {
      _ = try await future.value
      finished += 1
    }
  }
  return (workers, tasks, serial, parallel, unordered, completed)
}

print("countdown(\(n)) x \(tasks) tasks, \(workers) workers")
print("serial    parallel (map)    mapUnordered    asCompleted    speedup")
print(
  "\(format(seconds(serial))) s    \(format(seconds(parallel))) s            \(format(seconds(unordered))) s          "
    + "\(format(seconds(completed))) s         \(format(seconds(serial) / seconds(parallel)))x")
