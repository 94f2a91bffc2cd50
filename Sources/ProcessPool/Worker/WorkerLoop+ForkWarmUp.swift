#if canImport(Glibc)
  import Glibc
#endif

/// A fork server makes, ahead, the generic type metadata every worker's first frames need, so
/// that its workers inherit it: made afresh in each worker (a demangling per type), it took
/// about a tenth of a recycled worker's life (`maxTasksPerChild: 1`, a crash storm).
extension WorkerLoop {
  /// What the warm-up made, kept so that the optimizer cannot drop the making.
  nonisolated(unsafe) static var forkWarmUpKept: [Any] = []

  /// Runs once, in the fork server, before it forks a worker.
  static let forkWarmUp: Void = {
    // A growing reply buffer and a batch of frame headers (the worker loop's first frames).
    var bytes: [UInt8] = []
    bytes.reserveCapacity(1 << 12)
    for byte in 0..<UInt8(64) { bytes.append(byte) }
    var headers: [Frame.Header] = []
    for id in 0..<UInt64(8) { headers.append(Frame.Header(kind: .run, id: id, payload: 0..<Int(id))) }
    let instant: ContinuousClock.Instant? = ContinuousClock.now
    // The types the worker loop's deadlines and the decoder's fast paths look at.
    let types: [Any.Type] = [
      [UInt8].self, [Int].self, [Double].self, ContinuousClock.Instant?.self,
      (ContinuousClock.Instant?, ContinuousClock.Instant?).self, TaskPriority?.self,
      (any ProcessTask)?.self,
    ]
    // A value decoded as a task is: the decoder's witness tables (`Decoder`, its containers).
    let decoded = (try? BinaryEncoder.encode(ForkWarmUpValue(value: 1))).flatMap {
      try? BinaryDecoder.decode(ForkWarmUpValue.self, from: $0)
    }
    // Room at the top of the heap for what a worker allocates (its 64 KiB read buffer among
    // it): otherwise each new worker grows the heap with a `brk` of its own.
    let blocks = (0..<3).map { _ in malloc(60 << 10) }
    for block in blocks { free(block) }
    forkWarmUpKept = [bytes, headers, instant as Any, types, decoded as Any]
  }()
}

/// What the fork server's warm-up encodes and decodes: a value with a stored property, as most
/// task values are.
private struct ForkWarmUpValue: Codable {
  var value: Int
}
