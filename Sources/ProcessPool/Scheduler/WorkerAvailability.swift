/// Workers that may take a job, listed by how many jobs they held when listed: dispatch takes
/// the first worker of the lowest level (the least loaded, longest waiting) instead of scanning
/// every worker for each job. An entry is a hint checked when taken: `WorkerSlot.listedAt` says
/// where a worker is listed now, and an entry that disagrees is stale and dropped.
struct WorkerAvailability {
  private var levels: [[Int]] = []
  private var heads: [Int] = []
  /// Every level below this one is empty: `takeFirst` starts here, not at level 0 (a worker of
  /// fast jobs is listed at up to half its pipeline's depth, 128, and most levels are empty).
  private var lowest = 0

  /// Adds `id` at the end of `level`; true when that level holds so many stale entries beside
  /// the `limit` live ones it may hold that the caller should `compact` it.
  mutating func list(_ id: Int, at level: Int, limit: Int) -> Bool {
    while levels.count <= level {
      levels.append([])
      heads.append(0)
    }
    levels[level].append(id)
    lowest = min(lowest, level)
    return levels[level].count - heads[level] > limit
  }

  /// Takes the first entry of the lowest non-empty level in `range`.
  mutating func takeFirst(in range: ClosedRange<Int>) -> (id: Int, level: Int)? {
    var level = max(range.lowerBound, lowest)
    while level <= range.upperBound && level < levels.count {
      if heads[level] == levels[level].count {
        if level == lowest { lowest += 1 }
      } else {
        let id = levels[level][heads[level]]
        heads[level] += 1
        if heads[level] == levels[level].count {
          levels[level].removeAll(keepingCapacity: true)
          heads[level] = 0
        }
        return (id, level)
      }
      level += 1
    }
    return nil
  }

  /// The entries of `level` not taken yet.
  func entries(at level: Int) -> ArraySlice<Int> { levels[level][heads[level]...] }

  /// Replaces the entries of `level` (by what `compact` kept).
  mutating func replace(level: Int, with entries: [Int]) {
    levels[level] = entries
    heads[level] = 0
    if !entries.isEmpty { lowest = min(lowest, level) }
  }
}
