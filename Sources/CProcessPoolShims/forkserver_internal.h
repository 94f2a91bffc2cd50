#ifndef C_PROCESS_POOL_FORKSERVER_INTERNAL_H
#define C_PROCESS_POOL_FORKSERVER_INTERNAL_H

/// Serves spawn, prepare and wait requests on `sock` until the parent goes (then exits). Returns 0
/// only in a forked worker, with its descriptors, process group, working directory and `environ`
/// set up. `swift_ready`: Swift code may run before `main` (prepare requests are ignored otherwise).
int pp_fork_server_run(int sock, int swift_ready);

#endif
