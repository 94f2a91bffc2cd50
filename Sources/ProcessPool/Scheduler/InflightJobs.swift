/// A worker's jobs sent and not answered, oldest first (the first one is running). One is
/// removed from the front per result, and a worker of fast jobs holds up to 256: an array's
/// `removeFirst` moved all the others each time, so this one only moves its start, and gives the
/// room back once half of it is behind.
struct InflightJobs: RandomAccessCollection, ExpressibleByArrayLiteral {
  /// The jobs from `head` on; those before it were removed (nil, so they are released at once).
  private var jobs: [Job?] = []
  private var head = 0

  init(arrayLiteral elements: Job...) { jobs = elements }

  var startIndex: Int { 0 }
  var endIndex: Int { jobs.count - head }
  subscript(position: Int) -> Job { jobs[head + position]! }

  mutating func append(_ job: Job) { jobs.append(job) }

  /// Removes the oldest job; there must be one.
  mutating func removeFirst() {
    precondition(head < jobs.count, "removeFirst on no jobs")
    jobs[head] = nil
    head += 1
    if head == jobs.count {
      jobs.removeAll(keepingCapacity: true)
      head = 0
    } else if head >= 64 && head * 2 >= jobs.count {
      jobs.removeSubrange(0..<head)
      head = 0
    }
  }
}
