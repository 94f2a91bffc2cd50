// The countdown from Python's concurrent.futures docs: the same CPU-bound work run serially in
// this process and in parallel on a process pool, printed side by side.
//
//   swift run -c release Countdown [n] [tasks]
import ProcessPool

// Needed only in a build linked with --static-swift-stdlib; harmless otherwise.
ProcessPoolWorker.bootstrap()

/// Counts down from its input: pure CPU work, no I/O.
struct Countdown: ProcessTask {
  func run(_ n: Int) async throws -> Int {
    var n = n
    while n > 0 { n = opaque(n) - 1 }
    return n
  }
}

/// Keeps the optimiser from folding the loop away.
@inline(never) func opaque(_ value: Int) -> Int { value }

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
let pool = try ProcessPoolExecutor()
let workers = pool.configuration.maxWorkers
let tasks = arguments.dropFirst().first ?? workers * 4
let inputs = Array(repeating: n, count: tasks)
let clock = ContinuousClock()

// Serial: one countdown after another in this process.
let serial = try await clock.measure {
  for input in inputs { _ = try await Countdown().run(input) }
}

// Parallel: `map` yields the results in input order; chunksize 1 because each task is long.
let parallel = try await clock.measure {
  for try await result in try pool.map(Countdown(), inputs, chunksize: 1) { precondition(result == 0) }
}

// asCompleted: the same work submitted one by one, taken in the order it finishes.
var finished = 0
let completed = try await clock.measure {
  let futures = try inputs.map { try pool.submit(Countdown(), $0) }
  for try await future in asCompleted(futures) {
    _ = try await future.value
    finished += 1
  }
}
await pool.shutdown()

print("countdown(\(n)) x \(tasks) tasks, \(workers) workers")
print("serial    parallel (map)    asCompleted    speedup")
print(
  "\(format(seconds(serial))) s    \(format(seconds(parallel))) s            \(format(seconds(completed))) s         "
    + "\(format(seconds(serial) / seconds(parallel)))x")
