extension WorkerLauncher {
  /// Workers on a Slurm cluster: each worker is one `srun` job step with one task.
  ///
  /// Inside an allocation (a program started by `salloc` or `sbatch`, with `SLURM_JOB_ID` set)
  /// the steps run in that allocation, each on the resources it asks for (`--exact`), so
  /// `workers` should not exceed its tasks; outside one, each step is a job of its own and waits
  /// in the queue like any other (see ``ProcessPoolExecutor/Configuration/launchTimeout``).
  ///
  /// ```swift
  /// // In a batch script: #SBATCH --ntasks=64
  /// configuration.launchers = [.slurm(workers: 64)]
  /// // Outside an allocation: 16 one-task jobs in the compute partition.
  /// configuration.launchers = [.slurm(workers: 16, arguments: ["--partition=compute", "--time=30"])]
  /// ```
  ///
  /// The step's output is unbuffered (`--unbuffered`: by default `srun` holds a task's output
  /// until a newline, which the binary protocol never sends). A timeout,
  /// `cancel(terminatingWorker:)`, `terminateWorkers()`, `killWorkers()` and `shutdown` end the
  /// step: `srun` runs in a session of its own under a small `sh` that the pool signals, and gets
  /// SIGTERM when that shell ends (even by SIGKILL, which `srun` could not pass on), so it cancels
  /// the step instead of leaving it running. A task that crashes on its node fails with the exit
  /// status `srun` reports: the task's exit code, or 128 plus the signal that ended it.
  /// Needs `srun`, `setsid` and `setpriv` (util-linux) on this machine.
  ///
  /// - Parameters:
  ///   - workers: How many workers (steps) to run at once.
  ///   - arguments: More `srun` options, placed after the defaults (so they win where they
  ///     overlap), such as `--partition`, `--time`, `--cpus-per-task`, `--mem`, `--nodes`,
  ///     `--exclusive` or `--job-name`. Leave `--ntasks` at one.
  ///   - executable: The worker program's path on the compute nodes; default: this executable's
  ///     path, right for a shared file system.
  public static func slurm(
    workers: Int, arguments: [String] = [], executable: String = ProcessPoolWorker.executablePath
  ) -> WorkerLauncher {
    let srun =
      ["srun", "--ntasks=1", "--exact", "--unbuffered", "--job-name=processpool"] + arguments + [
        "env", environmentMarker, executable,
      ]
    // The pool signals the shell's process group; srun, in its own session, is not in it and
    // gets SIGTERM when the shell dies. The shell waits for srun (not `exec`), so its exit
    // status is srun's.
    let script = #"setsid setpriv --pdeathsig TERM -- "$@"; exit $?"#
    return WorkerLauncher(
      kind: .command(["/bin/sh", "-c", script, "srun"] + srun), flavor: .slurm, workers: workers,
      description: "slurm")
  }
}
