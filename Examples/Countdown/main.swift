// The countdown from Python's concurrent.futures docs, serial vs parallel, side by side.
//
//   swift run -c release Countdown [n] [tasks]
import ProcessPool

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

let arguments = CommandLine.arguments.dropFirst().compactMap { Int($0) }
let n = arguments.first ?? 50_000_000
let pool = try ProcessPoolExecutor()
let workers = pool.configuration.maxWorkers
let tasks = arguments.dropFirst().first ?? workers * 2
let clock = ContinuousClock()

// Serial: one task after another in this process.
let serialTime = try await clock.measure {
  for _ in 0..<tasks { _ = try await Countdown().run(n) }
}

// Parallel: the same tasks on the pool, results in order, four inputs per message.
var parallelTime = Duration.zero
parallelTime = try await clock.measure {
  var futures: [ProcessFuture<Int>] = []
  for _ in 0..<tasks { futures.append(try pool.submit(Countdown(), n)) }
  for future in futures { _ = try await future.value }
}
await pool.shutdown()

func seconds(_ duration: Duration) -> String {
  let (whole, fraction) = duration.components
  let milliseconds = Int(whole) * 1000 + Int(fraction / 1_000_000_000_000_000)
  return "\(milliseconds / 1000).\(String(repeating: "0", count: 3 - String(milliseconds % 1000).count))\(milliseconds % 1000) s"
}

let speedup = Double(serialTime.components.seconds * 1_000_000_000_000_000_000 + serialTime.components.attoseconds)
  / Double(parallelTime.components.seconds * 1_000_000_000_000_000_000 + parallelTime.components.attoseconds)
print("countdown(\(n)) x \(tasks) tasks on \(workers) workers")
print("  serial     parallel   speedup")
print("  \(seconds(serialTime))    \(seconds(parallelTime))    \((speedup * 100).rounded() / 100)x")
