/// A chunk's `results` payload as it came from the worker, checked but not decoded: the pool's
/// I/O thread only copies it, and the consumer decodes it when it reaches the chunk. Not generic,
/// so finishing a chunk costs no runtime generic lookups on the I/O thread.
@usableFromInline
struct RawOutcomes: Sendable {
  /// `[u32 count]([u8 status][u32 length][bytes])*`.
  @usableFromInline let payload: [UInt8]
  /// How many outcomes are failures (for the progress, counted from the status bytes).
  let failed: Int
  @usableFromInline let workerPID: Int32

  /// Checks the framing of `count` outcomes and copies them.
  init(_ payload: UnsafeRawBufferPointer, expected count: Int, workerPID: Int32) throws {
    var failed = 0
    try ResultsPayload.forEachOutcome(in: payload, expected: count) { succeeded, _ in if !succeeded { failed += 1 } }
    self.payload = Array(payload)
    self.failed = failed
    self.workerPID = workerPID
  }

  /// An empty set of outcomes (a chunk none of whose inputs could be encoded).
  init() {
    payload = []
    failed = 0
    workerPID = 0
  }
}
