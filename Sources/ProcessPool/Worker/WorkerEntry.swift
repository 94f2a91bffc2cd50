/// Called by the C constructor (before `main`) in a process started as a worker, when Swift
/// concurrency is usable that early (a dynamically linked build).
@_cdecl("processpool_worker_entry")
func processPoolWorkerEntry(_ input: Int32, _ output: Int32) {
  WorkerLoop(input: input, output: output).run()
}

/// Called by a fork server (before `main`, single-threaded, in a dynamically linked build) with
/// the mangled name of a task or initializer type the pool uses: the lookup, most of what a fresh
/// worker spends before its first result, is done once there, and its workers inherit the result.
@_cdecl("processpool_fork_server_prepare")
func processPoolForkServerPrepare(_ name: UnsafePointer<CChar>) {
  WorkerLoop.forkWarmUp
  let name = String(cString: name)
  if let type = TaskTypeRegistry.task(named: name) {
    WorkerLoop.prepare(type, named: name)
  } else {
    _ = TaskTypeRegistry.initializer(named: name)
  }
}
