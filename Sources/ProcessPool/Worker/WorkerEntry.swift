/// Called by the C constructor (before `main`) in a process started as a worker, when Swift
/// concurrency is usable that early (a dynamically linked build).
@_cdecl("processpool_worker_entry")
func processPoolWorkerEntry(_ input: Int32, _ output: Int32) {
  WorkerLoop(input: input, output: output).run()
}
