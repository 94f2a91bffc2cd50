#ifndef C_PROCESS_POOL_SHIMS_H
#define C_PROCESS_POOL_SHIMS_H

#include <sys/epoll.h>
#include <sys/types.h>

/// The environment variable that marks a process started as a pool worker. Its value is
/// `<where>:<token>`: where the protocol runs (the descriptor number of the worker's end of the
/// socket, optionally followed by `,` and the descriptor of its reply ring, as in `3,4`; or
/// `stdio` for a worker started by a launcher command, over its stdin and stdout) and a token of
/// `PP_TOKEN_LENGTH` hex digits, new for each worker, that the pool also writes as the first
/// bytes there. A process whose marker is malformed or whose token does not arrive is no worker.
#define PP_WORKER_ENV "PROCESSPOOL_WORKER_FD"

/// Exit statuses of a worker that cannot go on (the pool explains them in its errors).
/// The initializer threw: the pool breaks with its error.
#define PP_EXIT_INITIALIZER_FAILED 3
/// The worker could not start the thread that watches for its parent's end.
#define PP_EXIT_NO_THREAD 70
/// The parent sent a frame that only a worker sends (another protocol, or garbage).
#define PP_EXIT_UNEXPECTED_FRAME 71
/// Reading the parent's frames failed (a malformed or oversized frame).
#define PP_EXIT_READ_FAILED 72
/// The worker could not encode a reply.
#define PP_EXIT_REPLY_FAILED 73
/// A launched worker could not take over its standard input and output.
#define PP_EXIT_NO_STDIO 74
/// A local worker could not map its reply ring.
#define PP_EXIT_NO_RING 75
/// The worker loop cannot run in this executable (no entry, or a static link it cannot enter).
#define PP_EXIT_NO_ENTRY 76

/// The length of a worker's token (hex digits).
#define PP_TOKEN_LENGTH 32

/// How long a launched worker waits for its token on stdin (it may still be on its way through
/// ssh); a local worker's token is there before it starts.
#define PP_TOKEN_WAIT_SECONDS 30

/// 1 when a worker of this executable can enter its loop before `main`: always in a dynamically
/// linked build; in a --static-swift-stdlib build when the linker defined `__init_array_start`
/// (the hook then runs the constructors that follow it, libdispatch's among them). Else 0.
int pp_worker_entry_available(void);

/// Takes the descriptor of the worker's reply ring (shared memory the parent created), or -1
/// when it has none (a worker started by a launcher) or it was taken.
int pp_take_ring_fd(void);

/// memfd_create with close-on-exec; -1 with errno on failure.
int pp_memfd_create(const char *name);

/// pipe2 with O_CLOEXEC (not exported by Swift's Glibc module).
int pp_pipe_cloexec(int fds[2]);

/// memcpy of `count` bytes, except where the destination lies 1 to 63 bytes past the source
/// modulo a page and `count` is below the L2 cache's size: there the bytes go in pieces too
/// small for `rep movsb`, which glibc uses for such copies from a few KiB on and which then runs
/// 15 to 40 times slower on AMD processors (glibc avoids that distance on Intel only).
void pp_copy_bytes(void *destination, const void *source, size_t count);

/// 1 when `pp_copy_bytes` would copy these bytes in pieces, else 0.
int pp_copy_splits(const void *destination, const void *source, size_t count);

/// Atomics on memory shared with another process (the reply ring's header). The standard
/// library's `Atomic` owns its storage and offers no operations on memory at a given address
/// (swift-atomics' `UnsafeAtomic` does, but the package takes no dependencies).
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
/// every other descriptor above 2 closed in the child, in a process group of its own, with SIGCHLD,
/// SIGTERM and SIGPIPE at their defaults, and `error_fd` (when not -1) as its stderr. Returns 0 or
/// an errno value; the pid goes to `pid`.
int pp_spawn_worker(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                    int child_fd, int ring_fd, int stdio, int error_fd);

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

/// Marks the calling thread as a pool's I/O thread (a thread-local flag), and reads the mark: code
/// that would block that thread (a done-callback waiting on a future) checks it.
void pp_mark_io_thread(void);
int pp_is_io_thread(void);

/// How many times this process image has been forked into a child: 0 in the process that
/// started, one more in each child (counted by a `pthread_atfork` handler). A pool created with
/// another count belongs to an ancestor and must not be used.
unsigned int pp_fork_generation(void);

/// pidfd_open(2): a descriptor (close-on-exec) that becomes readable when `pid` exits, or -1
/// with errno (ENOSYS on kernels before 5.3).
int pp_pidfd_open(pid_t pid);

/// pidfd_send_signal(2): `signal` to the process of `pidfd`; -1 with errno (ESRCH once it exited).
int pp_pidfd_send_signal(int pidfd, int signal);

/// One event of `pp_epoll_wait`: epoll's own struct is packed on x86-64, which Swift cannot
/// import as such, so events are copied into this plain one.
typedef struct {
    unsigned int events;
    unsigned long long data;
} pp_epoll_event;

/// epoll_create1(EPOLL_CLOEXEC); -1 with errno.
int pp_epoll_create(void);

/// epoll_ctl(2) with `events` and `data` as the event; -1 with errno.
int pp_epoll_ctl(int epfd, int op, int fd, unsigned int events, unsigned long long data);

/// epoll_wait(2) into `events` (at most `count`, no more than 256); -1 with errno.
int pp_epoll_wait(int epfd, pp_epoll_event *events, int count, int timeout);

/// Writes `count` bytes to stderr without ever raising SIGPIPE (stderr may be a pipe nobody
/// reads): SIGPIPE is blocked in the calling thread for the write, and one it raised is consumed.
/// Best effort: returns the bytes written, or -1 with errno.
long pp_write_stderr(const void *bytes, unsigned long count);

/// The process environment (`environ`), which Swift cannot name portably.
char *const *pp_environ(void);

/// The marker's `<where>` for a fork server (`forkserver:<token>`): a process that stops in the
/// pre-main hook, single-threaded, and forks local workers on request over the socket on fd 3.
#define PP_FORK_SERVER_MARKER "forkserver"

/// What the fork server calls return when the request went out but no answer came (the server
/// died meanwhile): whether it forked is unknown.
#define PP_FORK_SERVER_LOST 0x10000

/// Asks the fork server on `server` (a blocking socket) for a worker with `child_fd` on fd 3,
/// `ring_fd` (when not -1) on 4, `error_fd` (or, when -1, this process's stderr) as its stderr,
/// this process's stdin, stdout and working directory as they are now, and `length` bytes of
/// NUL-terminated entries as its environment; in a process group of its own, killed when the
/// server ends. Does not wait for the answer (`pp_fork_server_read_reply`: the pid, or -1 and
/// an errno value). Returns 0; a positive errno value when the request could not be sent (the
/// server is gone), or `PP_FORK_SERVER_LOST`.
int pp_fork_server_send_spawn(int server, int child_fd, int ring_fd, int error_fd, const char *environment,
                              unsigned long length);

/// 1 in a worker the fork server forked (killed by its parent-death signal when the server
/// ends, which it does when the pool's process goes), else 0.
int pp_forked_by_server(void);

/// Has the fork server look up the task and initializer types named in `names` (`length` bytes
/// of NUL-terminated mangled names) before it forks more workers, which then find them at once.
/// No answer; returns 0, a positive errno value or `PP_FORK_SERVER_LOST`.
int pp_fork_server_prepare(int server, const char *names, unsigned long length);

/// Asks the fork server to waitpid(`pid`) (with WNOHANG when `nohang`), without waiting for the
/// answer (`pp_fork_server_read_reply`: the pid, or 0 while it runs, or -1 and an errno value;
/// and the raw status). Returns 0, a positive errno value or `PP_FORK_SERVER_LOST`.
int pp_fork_server_send_wait(int server, pid_t pid, int nohang);

/// Reads the fork server's next answer (they come in the order of the requests): 1 with its
/// result, status and errno value; 0 when none is there yet and `nonblocking`;
/// `PP_FORK_SERVER_LOST` when the server is gone.
int pp_fork_server_read_reply(int server, int nonblocking, int *result, int *status, int *error);

#endif
