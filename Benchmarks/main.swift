// Benchmarks: see Benchmarks/README.md (issue 6 extends this to the full peer comparison).
import ProcessPool

struct Echo: ProcessTask {
  func run(_ x: Int) async throws -> Int { x }
}

let pool = try ProcessPoolExecutor(maxWorkers: 1)
_ = try await pool.submit(Echo(), 0).value
let clock = ContinuousClock()
var samples: [Duration] = []
for i in 0..<2000 {
  let start = clock.now
  _ = try await pool.submit(Echo(), i).value
  samples.append(start.duration(to: clock.now))
}
samples.sort()
print("latency p50 \(samples[samples.count / 2]) p99 \(samples[samples.count * 99 / 100])")
await pool.shutdown()
