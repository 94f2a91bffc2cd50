// The same workloads and metric names as ../shared/peers/python_peers.py, for our pool.
//
//   swift run -c release Benchmarks [--workers N] [--repeat R] [--quick] [--json]
//                                   [--ssh HOST [--ssh-option ARG]...] [--slurm]
//
// With --ssh, the start-up and round trip of a worker on HOST (through the system ssh client)
// are measured too, next to the local ones; with --slurm, those of a worker run as an srun job
// step (`.slurm`, on the cluster `srun` reaches).
// Benchmarks/compare.sh runs this next to the C socket limit and the Python peers and prints
// the ratios.
import ProcessPool
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

ProcessPoolWorker.bootstrap()

struct Identity: ProcessTask {
  func run(_ x: Int) async throws -> Int { x }
}

/// Crashes its worker (a `fatalError`) when its input is a multiple of 3.
struct CrashEveryThird: ProcessTask {
  func run(_ x: Int) async throws -> Int {
    if x % 3 == 0 { fatalError("crash on purpose at \(x)") }
    return x
  }
}

struct EchoBytes: ProcessTask {
  func run(_ bytes: [UInt8]) async throws -> [UInt8] { bytes }
}

/// Python's `countdown(n)`: `while n > 0: n -= 1`, with a mixing step the optimiser cannot fold.
struct Countdown: ProcessTask {
  func run(_ n: Int) async throws -> Int { countdown(n) }
}

func countdown(_ n: Int) -> Int {
  var n = n
  var state: UInt64 = 1
  while n > 0 {
    state = (state ^ (state >> 31)) &* 0xbf58_476d_1ce4_e5b9 &+ 1
    n -= 1
  }
  return Int(truncatingIfNeeded: state >> 60)
}

let arguments = Array(CommandLine.arguments.dropFirst())
func stringOption(_ name: String) -> String? {
  guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
  return arguments[index + 1]
}
func option(_ name: String) -> Int? { stringOption(name).flatMap { Int($0) } }
let quick = arguments.contains("--quick")
let json = arguments.contains("--json")
let workers = option("--workers") ?? 2
let repeats = option("--repeat") ?? 3
let scale = quick ? 10 : 1
/// `--only a,b`: run just these sections (startup, latency, c1, c64, payload, payload_large,
/// countdown, as_completed, completion, recycle, many, unordered, bigmap, crashes), e.g. to
/// profile one workload.
let only: Set<Substring>? = arguments.firstIndex(of: "--only").flatMap { index in
  index + 1 < arguments.count ? Set(arguments[index + 1].split(separator: ",")) : nil
}
func enabled(_ section: Substring) -> Bool { only?.contains(section) ?? true }

let clock = ContinuousClock()
func seconds(_ duration: Duration) -> Double {
  Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}
func median(_ values: [Double]) -> Double {
  let sorted = values.sorted()
  return sorted.isEmpty ? .nan : sorted[sorted.count / 2]
}
func percentile(_ sorted: [Double], _ q: Double) -> Double {
  let rank = max(1, Int((q / 100 * Double(sorted.count)).rounded(.up)))
  return sorted[rank - 1]
}
func log(_ message: String) {
  let line = Array((message + "\n").utf8)
  line.withUnsafeBytes { _ = write(2, $0.baseAddress, $0.count) }
}

var results: [(String, Double)] = [("workers", Double(workers))]

// Start-up: a new pool to the first result of a trivial task; then shutdown.
var starts: [Double] = []
var stops: [Double] = []
for _ in 0..<(enabled("startup") ? (quick ? 3 : 10) : 0) {
  let t0 = clock.now
  let pool = try ProcessPoolExecutor(maxWorkers: workers)
  let value = try await pool.submit(Identity(), 1).value
  let t1 = clock.now
  await pool.shutdown()
  let t2 = clock.now
  precondition(value == 1)
  starts.append(seconds(t0.duration(to: t1)))
  stops.append(seconds(t1.duration(to: t2)))
}
if enabled("startup") {
  results.append(("startup_ms", median(starts) * 1e3))
  results.append(("shutdown_ms", median(stops) * 1e3))
  log("  startup done")
}

let pool = try ProcessPoolExecutor(maxWorkers: workers)
_ = try await pool.submit(Identity(), 0).value

// Latency: one submit + result at a time.
let latencyRounds = enabled("latency") ? 2000 / scale : 0
for i in 0..<(latencyRounds / 10) { _ = try await pool.submit(Identity(), i).value }
var latencies: [Double] = []
for i in 0..<latencyRounds {
  let t0 = clock.now
  let value = try await pool.submit(Identity(), i).value
  latencies.append(seconds(t0.duration(to: clock.now)))
  precondition(value == i)
}
latencies.sort()
if enabled("latency") {
  results.append(("latency_p50_us", percentile(latencies, 50) * 1e6))
  results.append(("latency_p99_us", percentile(latencies, 99) * 1e6))
  log("  latency done")
}

// Throughput: map over ints with chunksize 1 and 64.
func mapRate(count: Int, chunksize: Int) async throws -> Double {
  let items = Array(0..<count)
  for try await _ in try pool.map(Identity(), items.prefix(max(1000, count / 20)), chunksize: chunksize) {}
  var rates: [Double] = []
  for _ in 0..<repeats {
    var last = -1
    let elapsed = try await clock.measure {
      for try await value in try pool.map(Identity(), items, chunksize: chunksize) { last = value }
    }
    precondition(last == count - 1)
    rates.append(Double(count) / seconds(elapsed))
  }
  return median(rates)
}
if enabled("c1") {
  results.append(("throughput_c1_tasks_s", try await mapRate(count: 20_000 / scale, chunksize: 1)))
}
if enabled("c64") {
  results.append(("throughput_c64_tasks_s", try await mapRate(count: 200_000 / scale, chunksize: 64)))
}
log("  throughput done")

// Recycling: `maxTasksPerChild: 1` starts a new worker for every task.
if enabled("recycle") {
  var configuration = ProcessPoolExecutor.Configuration()
  configuration.maxWorkers = workers
  configuration.maxTasksPerChild = 1
  var rates: [Double] = []
  let count = 200 / scale
  for _ in 0..<repeats {
    let recycling = try ProcessPoolExecutor(configuration: configuration)
    let elapsed = try await clock.measure {
      for try await _ in try recycling.map(Identity(), 0..<count, chunksize: 1) {}
    }
    await recycling.shutdown()
    rates.append(Double(count) / seconds(elapsed))
  }
  results.append(("max_tasks_per_child_1_tasks_s", median(rates)))
  log("  recycle done")
}

// Hundreds of workers on this machine's cores: chunksize 1 against the same with the small
// pool above, and how long the first submits take (each may need a new worker).
if enabled("many") {
  let many = 256
  var configuration = ProcessPoolExecutor.Configuration()
  configuration.maxWorkers = many
  let big = try ProcessPoolExecutor(configuration: configuration)
  var futures: [ProcessFuture<Int>] = []
  let submitting = try clock.measure {
    futures = try (0..<many).map { try big.submit(Identity(), $0) }
  }
  for future in futures { _ = try await future.value }
  let count = 20_000 / scale
  var rates: [Double] = []
  for _ in 0..<repeats {
    let elapsed = try await clock.measure {
      for try await _ in try big.map(Identity(), 0..<count, chunksize: 1) {}
    }
    rates.append(Double(count) / seconds(elapsed))
  }
  await big.shutdown()
  results.append(("workers_256_first_submits_ms", seconds(submitting) * 1e3))
  results.append(("workers_256_c1_tasks_s", median(rates)))
  log("  many done")
}

// Payload: 1 MiB echoed (`payload`), and 16 MiB and 256 MiB (`payload_large`); MB/s counting
// both directions, as the C socket's bulk echo does.
func echoRate(_ size: Int, count: Int) async throws -> Double {
  let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0) }
  for _ in 0..<3 { _ = try await pool.submit(EchoBytes(), payload).value }
  var rates: [Double] = []
  for _ in 0..<repeats {
    let elapsed = try await clock.measure {
      for _ in 0..<count {
        let back = try await pool.submit(EchoBytes(), payload).value
        precondition(back.count == payload.count)
      }
    }
    rates.append(2 * Double(payload.count * count) / seconds(elapsed) / 1e6)
  }
  return median(rates)
}
if enabled("payload") {
  results.append(("payload_MB_s", try await echoRate(1 << 20, count: 200 / scale)))
  log("  payload done")
}
if enabled("payload_large") {
  results.append(("payload_16MiB_MB_s", try await echoRate(16 << 20, count: max(1, 40 / scale))))
  results.append(("payload_256MiB_MB_s", try await echoRate(256 << 20, count: max(1, 4 / scale))))
  log("  payload_large done")
}

// Countdown of 10M: serial here vs split across the workers. Swift counts 10M down in about
// 17 ms, so that speedup mostly measures dispatch and the machine's other load; the same
// countdown sized to CPython's serial time (about 0.3 s, 200M) shows the parallel speedup.
func countdownTimes(count: Int) async throws -> (serial: Double, parallel: Double) {
  let parts = (0..<workers).map { count / workers + ($0 < count % workers ? 1 : 0) }
  var serialTimes: [Double] = []
  var parallelTimes: [Double] = []
  var sink = 0
  for _ in 0..<3 {
    serialTimes.append(seconds(clock.measure { sink &+= countdown(count) }))
    parallelTimes.append(
      seconds(
        try await clock.measure {
          for try await value in try pool.map(Countdown(), parts, chunksize: 1) { sink &+= value }
        }))
  }
  log("  countdown \(count) done (\(sink & 1))")
  return (median(serialTimes), median(parallelTimes))
}
if enabled("countdown") {
  for try await _ in try pool.map(Countdown(), Array(repeating: 1000, count: workers), chunksize: 1) {}
  let (serial, parallel) = try await countdownTimes(count: 10_000_000 / scale)
  results.append(("countdown_serial_s", serial))
  results.append(("countdown_parallel_s", parallel))
  results.append(("countdown_speedup", serial / parallel))
  let long = try await countdownTimes(count: 200_000_000 / scale)
  results.append(("countdown_200M_serial_s", long.serial))
  results.append(("countdown_200M_parallel_s", long.parallel))
  results.append(("countdown_200M_speedup", long.serial / long.parallel))
}

// asCompleted over many submitted tasks.
if enabled("as_completed") {
  var completedRates: [Double] = []
  let completedCount = 2000 / scale
  for _ in 0..<repeats {
    var seen = 0
    let elapsed = try await clock.measure {
      let futures = try (0..<completedCount).map { try pool.submit(Identity(), $0) }
      for try await _ in asCompleted(futures) { seen += 1 }
    }
    precondition(seen == completedCount)
    completedRates.append(Double(completedCount) / seconds(elapsed))
  }
  results.append(("as_completed_tasks_s", median(completedRates)))
  log("  as_completed done")
}
// asCompleted and wait over many futures that are already finished, at two sizes: the time per
// future stays the same when both are linear (each was quadratic: 100k futures took seconds).
if enabled("completion") {
  for count in [25_000 / scale, 100_000 / scale] {
    let futures = try await Array(
      withThrowingTaskGroup(of: [ProcessFuture<Int>].self) { _ in
        let futures = try (0..<count).map { try pool.submit(Identity(), $0) }
        for future in futures { _ = try await future.value }
        return futures
      })
    var seen = 0
    let drained = try await clock.measure { for try await _ in asCompleted(futures) { seen += 1 } }
    precondition(seen == count)
    let waited = await clock.measure { _ = await wait(futures) }
    let size = count >= 100_000 / scale ? "large" : "small"
    results.append(("as_completed_\(size)_ns_per_future", seconds(drained) * 1e9 / Double(count)))
    results.append(("wait_\(size)_ns_per_future", seconds(waited) * 1e9 / Double(count)))
  }
  log("  completion done")
}
// Work whose duration varies by item (every 8th item, the first among them, 40 times longer):
// ordered `map` against `mapUnordered`, both with chunksize 1. Measured: when the first result
// arrives, the mean time at which a result arrives, and the whole run with a buffer of two
// chunks per worker (where the ordered map waits behind each slow item).
if enabled("unordered") {
  let sizes = (0..<(quick ? 32 : 96)).map { $0 % 8 == 0 ? 20_000_000 / scale : 500_000 / scale }
  func run(ordered: Bool, buffersize: Int?) async throws -> (first: Double, mean: Double, total: Double) {
    let t0 = clock.now
    var arrivals: [Double] = []
    if ordered {
      for try await _ in try pool.map(Countdown(), sizes, chunksize: 1, buffersize: buffersize) {
        arrivals.append(seconds(t0.duration(to: clock.now)))
      }
    } else {
      for try await _ in try pool.mapUnordered(Countdown(), sizes, chunksize: 1, buffersize: buffersize) {
        arrivals.append(seconds(t0.duration(to: clock.now)))
      }
    }
    precondition(arrivals.count == sizes.count)
    return (arrivals[0], arrivals.reduce(0, +) / Double(arrivals.count), arrivals.last!)
  }
  for ordered in [true, false] {
    let name = ordered ? "varied_ordered" : "varied_unordered"
    var firsts: [Double] = []
    var means: [Double] = []
    var buffered: [Double] = []
    for _ in 0..<repeats {
      let unbounded = try await run(ordered: ordered, buffersize: nil)
      firsts.append(unbounded.first)
      means.append(unbounded.mean)
      buffered.append(try await run(ordered: ordered, buffersize: 2 * workers).total)
    }
    results.append(("\(name)_first_ms", median(firsts) * 1e3))
    results.append(("\(name)_mean_ms", median(means) * 1e3))
    results.append(("\(name)_buffered_s", median(buffered)))
  }
  log("  unordered done")
}
await pool.shutdown()

/// The resident set now and its peak since the last `resetPeakResident()`, in bytes (from
/// /proc/self/status).
func residentBytes() -> (current: Double, peak: Double) {
  guard let file = fopen("/proc/self/status", "r") else { return (.nan, .nan) }
  defer { fclose(file) }
  var current = Double.nan
  var peak = Double.nan
  var line = [CChar](repeating: 0, count: 256)
  while fgets(&line, Int32(line.count), file) != nil {
    let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let kilobytes = Double(text.split(separator: " ").dropFirst().first.map(String.init) ?? "") ?? .nan
    if text.hasPrefix("VmRSS:") { current = kilobytes * 1024 }
    if text.hasPrefix("VmHWM:") { peak = kilobytes * 1024 }
  }
  return (current, peak)
}
/// Starts counting the peak resident set afresh (writing 5 to /proc/self/clear_refs).
func resetPeakResident() {
  guard let file = fopen("/proc/self/clear_refs", "w") else { return }
  fputs("5", file)
  fclose(file)
}

/// The bytes the process's heap has in use (glibc's `malloc_stats`, all arenas and mmapped
/// blocks): unlike the resident set, it leaves out a new thread's stack and arena, which would
/// swamp the few hundred items a lazy map queues.
func heapInUse() -> Double {
  guard let symbol = dlsym(nil, "malloc_stats"), let file = tmpfile() else { return .nan }
  defer { fclose(file) }
  let mallocStats = unsafeBitCast(symbol, to: (@convention(c) () -> Void).self)
  let saved = dup(2)
  dup2(fileno(file), 2)
  mallocStats()
  dup2(saved, 2)
  close(saved)
  rewind(file)
  var inUse = Double.nan
  var line = [CChar](repeating: 0, count: 256)
  // The last "in use bytes" line is the total over every arena, mmapped blocks included.
  while fgets(&line, Int32(line.count), file) != nil {
    let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    if text.contains("in use bytes") {
      let number = text.split(separator: "=").last?.filter(\.isNumber) ?? ""
      inUse = Double(String(number)) ?? .nan
    }
  }
  return inUse
}

/// Inputs pulled so far by the `bigmap` section's input.
let bigmapPulled = Atomic<Int>(0)

// A huge map with chunksize 1 and no buffersize over a lazy input (`--bigmap-items N`, default
// 5M): how long `map()` takes to return, the resident memory it added by then per input pulled
// (what a queued item costs), and the peak growth over the whole run per item. Nonisolated, as
// a map made on an actor pulls an input holding closures (this one counts) on the caller.
nonisolated func bigmap(count: Int) async throws -> [(String, Double)] {
  let big = try ProcessPoolExecutor(maxWorkers: workers)
  _ = try await big.submit(Identity(), 0).value
  let before = residentBytes().current
  let heapBefore = heapInUse()
  resetPeakResident()
  let inputs = (0..<count).lazy.map { value in
    bigmapPulled.add(1, ordering: .relaxed)
    return value
  }
  let t0 = clock.now
  let sequence = try big.map(Identity(), inputs, chunksize: 1)
  let returned = seconds(t0.duration(to: clock.now))
  let pulledAtReturn = bigmapPulled.load(ordering: .relaxed)
  // Nothing is read yet, so every input pulled is held (queued, or run with its output kept).
  // The feeder goes on pulling as the workers take items: the memory is read between two equal
  // counts of the inputs pulled, so that it is divided by the items it holds.
  var (held, atReturn, heapAtReturn) = (0, 0.0, 0.0)
  for _ in 0..<100 {
    held = bigmapPulled.load(ordering: .relaxed)
    (atReturn, heapAtReturn) = (residentBytes().current, heapInUse())
    if bigmapPulled.load(ordering: .relaxed) == held { break }
  }
  var seen = 0
  for try await value in sequence {
    precondition(value == seen)
    seen += 1
  }
  precondition(seen == count)
  let total = seconds(t0.duration(to: clock.now))
  let peak = residentBytes().peak
  // The automatic chunksize (a few huge chunks): how long `map` takes to return.
  let t1 = clock.now
  let automatic = try big.map(Identity(), 0..<count)
  let automaticReturned = seconds(t1.duration(to: clock.now))
  seen = 0
  for try await _ in automatic { seen += 1 }
  precondition(seen == count)
  await big.shutdown()
  return [
    ("bigmap_items", Double(count)), ("bigmap_return_ms", returned * 1e3),
    ("bigmap_pulled_at_return", Double(pulledAtReturn)),
    ("bigmap_queued_bytes_per_item", (atReturn - before) / Double(max(held, 1))),
    ("bigmap_queued_heap_bytes_per_item", (heapAtReturn - heapBefore) / Double(max(held, 1))),
    ("bigmap_peak_bytes_per_item", (peak - before) / Double(count)), ("bigmap_total_s", total),
    ("bigmap_items_per_s", Double(count) / total), ("bigmap_auto_chunksize_return_ms", automaticReturned * 1e3),
  ]
}
if enabled("bigmap") {
  results += try await bigmap(count: option("--bigmap-items") ?? 5_000_000 / scale)
  // Made here, on the main actor, the same kind of input is pulled on this actor (its closure is
  // isolated here), a batch at a time: how long `map` takes to return.
  let count = (option("--bigmap-items") ?? 5_000_000 / scale) / 5
  let big = try ProcessPoolExecutor(maxWorkers: workers)
  _ = try await big.submit(Identity(), 0).value
  var pulled = 0
  let t0 = clock.now
  let sequence = try big.map(
    Identity(),
    (0..<count).lazy.map {
      pulled += 1
      return $0
    }, chunksize: 1)
  let returned = seconds(t0.duration(to: clock.now))
  let pulledAtReturn = pulled
  var seen = 0
  for try await _ in sequence { seen += 1 }
  precondition(seen == count && pulled == count)
  // What each queued item costs: the whole input queued before `map` returns (a `buffersize` as
  // large as the input), by the resident size and by the heap in use.
  let before = residentBytes().current
  let heapBefore = heapInUse()
  let whole = try big.map(Identity(), 0..<count, chunksize: 1, buffersize: count)
  let queued = residentBytes().current - before
  let queuedHeap = heapInUse() - heapBefore
  // The workers ran some of the items while the rest were queued: those hold their outputs
  // until read, which counts in the figures per item too.
  let finishedAtReturn = whole.currentProgress.completed
  seen = 0
  for try await _ in whole { seen += 1 }
  precondition(seen == count)
  await big.shutdown()
  results.append(("bigmap_actor_items", Double(count)))
  results.append(("bigmap_actor_return_ms", returned * 1e3))
  results.append(("bigmap_actor_pulled_at_return", Double(pulledAtReturn)))
  results.append(("bigmap_whole_queued_bytes_per_item", queued / Double(count)))
  results.append(("bigmap_whole_queued_heap_bytes_per_item", queuedHeap / Double(count)))
  results.append(("bigmap_whole_finished_at_return", Double(finishedAtReturn)))
  log("  bigmap done")
}

// A crash storm: one task in three crashes its worker (a fatalError), with the workers' Swift
// backtracer off (the default) and on. Crash reports are captured, not printed.
if enabled("crashes") {
  for backtraces in [false, true] {
    var configuration = ProcessPoolExecutor.Configuration()
    configuration.maxWorkers = workers
    configuration.workerStandardError = .capture
    configuration.workerBacktraces = backtraces
    let count = backtraces ? 30 / (quick ? 3 : 1) : 90 / (quick ? 3 : 1)
    var rates: [Double] = []
    for _ in 0..<repeats {
      let stormy = try ProcessPoolExecutor(configuration: configuration)
      var crashed = 0
      let elapsed = try await clock.measure {
        var iterator = try stormy.map(CrashEveryThird(), 0..<count, chunksize: 1).makeAsyncIterator()
        while true {
          do {
            guard try await iterator.next() != nil else { break }
          } catch {
            crashed += 1
          }
        }
      }
      precondition(crashed == (count + 2) / 3)
      await stormy.shutdown()
      rates.append(Double(crashed) / seconds(elapsed))
    }
    results.append((backtraces ? "crashes_backtracer_on_s" : "crashes_s", median(rates)))
  }
  log("  crashes done")
}

/// A launched worker: start-up to the first result (median of three pools), and the round trip.
@MainActor func measureLaunched(_ launcher: WorkerLauncher, as name: String) async throws {
  var configuration = ProcessPoolExecutor.Configuration()
  configuration.launchers = [launcher]
  var starts: [Double] = []
  for _ in 0..<3 {
    let t0 = clock.now
    let remote = try ProcessPoolExecutor(configuration: configuration)
    _ = try await remote.submit(Identity(), 1).value
    starts.append(seconds(t0.duration(to: clock.now)))
    await remote.shutdown()
  }
  let remote = try ProcessPoolExecutor(configuration: configuration)
  for i in 0..<(100 / scale) { _ = try await remote.submit(Identity(), i).value }
  var latencies: [Double] = []
  for i in 0..<(1000 / scale) {
    let t0 = clock.now
    _ = try await remote.submit(Identity(), i).value
    latencies.append(seconds(t0.duration(to: clock.now)))
  }
  await remote.shutdown()
  latencies.sort()
  results.append(("\(name)_startup_ms", median(starts) * 1e3))
  results.append(("\(name)_latency_p50_us", percentile(latencies, 50) * 1e6))
  results.append(("\(name)_latency_p99_us", percentile(latencies, 99) * 1e6))
  log("  \(name) done")
}

if let host = stringOption("--ssh") {
  // Each --ssh-option is one ssh argument (a ProxyCommand holds spaces).
  let options = arguments.indices.filter { arguments[$0] == "--ssh-option" && $0 + 1 < arguments.count }
    .map { arguments[$0 + 1] }
  try await measureLaunched(.ssh(host: host, options: options, workers: 1), as: "ssh")
}

// A worker as a Slurm job step (srun reaches the cluster SLURM_CONF names, or the default one).
if arguments.contains("--slurm") {
  try await measureLaunched(.slurm(workers: 1), as: "slurm")
}

func number(_ value: Double) -> String {
  if value == value.rounded() && abs(value) < 1e15 { return String(Int(value)) }
  let scaled = (value * 1000).rounded() / 1000
  return "\(scaled)"
}

if json {
  print("{" + results.map { "\"\($0.0)\": \(number($0.1))" }.joined(separator: ", ") + "}")
} else {
  print("swift ProcessPool (\(workers) workers)")
  for (name, value) in results {
    print(name + String(repeating: " ", count: max(1, 26 - name.count)) + number(value))
  }
}
