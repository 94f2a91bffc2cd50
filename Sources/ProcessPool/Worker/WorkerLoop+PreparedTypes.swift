/// The task types a fork server resolved ahead (see `processPoolForkServerPrepare`), by their
/// mangled names' bytes: its workers find a type with a byte comparison, without the `String`,
/// the hashing and the registry's lock of a lookup by name, whose code a fresh worker would
/// page in, one fault per page (a tenth of its faults before its first result).
extension WorkerLoop {
  /// Written only in the fork server, single-threaded, before it forks; read in its workers.
  nonisolated(unsafe) private static var preparedTasks: [(name: [UInt8], type: any ProcessTask.Type)] = []

  /// Remembers `type` under `name` (in the fork server).
  static func prepare(_ type: any ProcessTask.Type, named name: String) {
    let bytes = Array(name.utf8)
    if !preparedTasks.contains(where: { $0.name == bytes }) { preparedTasks.append((bytes, type)) }
  }

  /// The type prepared under these bytes, if any.
  static func preparedTask(named name: UnsafeRawBufferPointer) -> (any ProcessTask.Type)? {
    for entry in preparedTasks where same(entry.name, name) { return entry.type }
    return nil
  }
}
