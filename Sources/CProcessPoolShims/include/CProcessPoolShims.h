#ifndef C_PROCESS_POOL_SHIMS_H
#define C_PROCESS_POOL_SHIMS_H

#include <sys/types.h>

/// The environment variable that marks a process started as a pool worker. Its value is the
/// descriptor number of the worker's end of the socket, optionally followed by `,` and the
/// descriptor of its reply ring (`3,4`), or `stdio` for a worker started by a launcher command
/// (the protocol runs over its stdin and stdout).
#define PP_WORKER_ENV "PROCESSPOOL_WORKER_FD"

/// Takes the worker's input and output descriptors when this process was started as a worker
/// whose loop could not run before `main` (a statically linked build); -1 when there is none
/// or it was taken. Returns the input descriptor.
int pp_take_deferred_worker_fds(int *input, int *output);

/// Takes the descriptor of the worker's reply ring (shared memory the parent created), or -1
/// when it has none (a worker started by a launcher) or it was taken.
int pp_take_ring_fd(void);

/// memfd_create with close-on-exec; -1 with errno on failure.
int pp_memfd_create(const char *name);

/// Atomics on memory shared with another process (the reply ring's header), which Swift's
/// `Atomic` cannot be placed in.
static inline unsigned long long pp_load_acquire_u64(const void *address) {
    return __atomic_load_n((const unsigned long long *)address, __ATOMIC_ACQUIRE);
}
static inline void pp_store_release_u64(void *address, unsigned long long value) {
    __atomic_store_n((unsigned long long *)address, value, __ATOMIC_RELEASE);
}
static inline void pp_store_u32(void *address, unsigned int value) {
    __atomic_store_n((unsigned int *)address, value, __ATOMIC_SEQ_CST);
}
static inline unsigned int pp_exchange_u32(void *address, unsigned int value) {
    return __atomic_exchange_n((unsigned int *)address, value, __ATOMIC_SEQ_CST);
}
static inline void pp_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

/// 1 when this process was started as a worker (before or in `main`), else 0.
int pp_started_as_worker(void);

/// posix_spawn of `path` with `argv`/`envp`, `child_fd` duplicated onto fd 3 (or, with `stdio`,
/// onto stdin and stdout, and `path` searched in PATH), `ring_fd` (when not -1) onto fd 4, and
/// every other descriptor above 2 closed in the child. Returns 0 or an errno value; the pid goes
/// to `pid`.
int pp_spawn_worker(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                    int child_fd, int ring_fd, int stdio);

/// The 64-bit FNV-1a hash of a file's contents (what names the copy of this executable that an
/// ssh launcher deploys). Returns 0, or an errno value when the file cannot be read.
int pp_hash_file(const char *path, unsigned long long *hash);

/// The number of CPUs this process may run on (its affinity mask), at least 1.
int pp_available_cpus(void);

/// Names the calling thread (best effort; shows in ps and debuggers).
void pp_set_thread_name(const char *name);

/// prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are re-parented to this process (used by
/// tests to wait for a worker whose parent was killed). Returns 0 or -1 with errno.
int pp_set_child_subreaper(int on);

/// The process environment (`environ`), which Swift cannot name portably.
char *const *pp_environ(void);

#endif
