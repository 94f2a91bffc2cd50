// The pre-main worker hook and posix_spawn's close-all-other-descriptors action: the two things
// Swift cannot do itself.
#define _GNU_SOURCE
#include "CProcessPoolShims.h"
#include "forkserver_internal.h"

#include <ctype.h>
#include <dlfcn.h>
#include <poll.h>
#include <time.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <errno.h>
#include <spawn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>

extern char **environ;

// Defined in Swift (Worker/WorkerEntry.swift): runs the worker loop and never returns.
extern void processpool_worker_entry(int input, int output) __attribute__((weak));

// The executable's constructors, in the order the loader calls them (defined by the linker when
// referenced; weak, so a link that defines none still links and the hook knows it cannot run).
typedef void (*pp_init_entry)(int, char **, char **);
extern pp_init_entry __init_array_start[] __attribute__((weak));
extern pp_init_entry __init_array_end[] __attribute__((weak));

static void processpool_worker_hook(int argc, char **argv, char **envp);

// The hook is an `.init_array` entry of its own (rather than a `constructor`) so that it can find
// its own place in that array.
__attribute__((section(".init_array"), used)) static pp_init_entry processpool_worker_hook_entry =
    processpool_worker_hook;

static int ring_fd = -1;
static int started_as_worker = 0;

int pp_take_ring_fd(void) {
    int fd = ring_fd;
    ring_fd = -1;
    return fd;
}

int pp_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

int pp_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int pp_started_as_worker(void) { return started_as_worker; }

char *const *pp_environ(void) { return environ; }

static __thread int is_io_thread = 0;
void pp_mark_io_thread(void) { is_io_thread = 1; }
int pp_is_io_thread(void) { return is_io_thread; }

static volatile unsigned int fork_generation = 0;
static void count_fork(void) { fork_generation += 1; }
__attribute__((constructor)) static void processpool_watch_forks(void) {
    pthread_atfork(NULL, NULL, count_fork);
}
unsigned int pp_fork_generation(void) { return fork_generation; }

int pp_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int pp_epoll_ctl(int epfd, int op, int fd, unsigned int events, unsigned long long data) {
    struct epoll_event event = {.events = events, .data = {.u64 = data}};
    return epoll_ctl(epfd, op, fd, &event);
}

int pp_epoll_wait(int epfd, pp_epoll_event *events, int count, int timeout) {
    struct epoll_event raw[256];
    if (count > 256) count = 256;
    int ready = epoll_wait(epfd, raw, count, timeout);
    for (int index = 0; index < ready; index++) {
        events[index].events = raw[index].events;
        events[index].data = raw[index].data.u64;
    }
    return ready;
}

int pp_pidfd_send_signal(int pidfd, int signal) {
#ifdef SYS_pidfd_send_signal
    return (int)syscall(SYS_pidfd_send_signal, pidfd, signal, NULL, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

int pp_pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

void pp_set_thread_name(const char *name) { pthread_setname_np(pthread_self(), name); }

int pp_set_child_subreaper(int on) { return prctl(PR_SET_CHILD_SUBREAPER, on, 0, 0, 0); }

long pp_write_stderr(const void *bytes, unsigned long count) {
    sigset_t pipe_only, previous, pending;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, &previous);
    // A SIGPIPE already pending for the thread or the process is not ours to consume.
    sigpending(&pending);
    int was_pending = sigismember(&pending, SIGPIPE);
    ssize_t written;
    do {
        written = write(2, bytes, count);
    } while (written < 0 && errno == EINTR);
    int saved = errno;
    if (written < 0 && saved == EPIPE && !was_pending) {
        const struct timespec now = {0, 0};
        while (sigtimedwait(&pipe_only, NULL, &now) < 0 && errno == EINTR) {}
    }
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    errno = saved;
    return (long)written;
}

int pp_available_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int count = CPU_COUNT(&set);
        if (count > 0) return count;
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)online : 1;
}

// 1 when libdispatch is a loaded shared object: its initialiser has run, so Swift concurrency is
// usable before `main` (a dynamically linked build).
static int dispatch_is_shared(void) {
    void *dispatch = dlopen("libdispatch.so", RTLD_NOLOAD | RTLD_LAZY);
    if (dispatch == NULL) return 0;
    dlclose(dispatch);
    return 1;
}

// dispatch_is_shared() as a fork server found it (its workers inherit it), else -1.
static int dispatch_shared = -1;

// 1 when the hook's own entry is in the executable's constructor array, so that, in a static
// build, it can run the constructors after its own (libdispatch's among them) itself.
static int hook_in_init_array(void) {
    pp_init_entry *own = &processpool_worker_hook_entry;
    return __init_array_start != NULL && __init_array_end != NULL && own >= __init_array_start &&
           own < __init_array_end;
}

int pp_worker_entry_available(void) {
    return processpool_worker_entry != NULL && (dispatch_is_shared() || hook_in_init_array());
}

// A worker started by a launcher (ssh, srun, ...) talks over stdin/stdout. Both move to new
// descriptors; stdin becomes /dev/null and stdout goes to stderr, so a task that prints cannot
// corrupt the protocol.
static int take_stdio(int *input, int *output) {
    *input = fcntl(0, F_DUPFD_CLOEXEC, 3);
    *output = fcntl(1, F_DUPFD_CLOEXEC, 3);
    if (*input < 0 || *output < 0) return -1;
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0 || dup2(null, 0) < 0 || dup2(2, 1) < 0) return -1;
    if (null != 0) close(null);  // 0 itself when stdin was closed
    return 0;
}

static void write_stderr(const char *text) {
    size_t length = strlen(text);
    while (length > 0) {
        ssize_t n = write(2, text, length);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        text += n;
        length -= (size_t)n;
    }
}

// Reads a descriptor number of the marker: digits only, not one of 0-2.
static int parse_fd(const char *text, const char **end) {
    if (!isdigit((unsigned char)*text)) return -1;
    long value = 0;
    while (isdigit((unsigned char)*text)) {
        value = value * 10 + (*text++ - '0');
        if (value > 65535) return -1;
    }
    *end = text;
    return value >= 3 ? (int)value : -1;
}

// The marker's value is "<where>:<token>": where the protocol runs ("stdio", or the socket's
// descriptor optionally followed by ",<the reply ring's>") and the token the pool also writes as
// the first bytes there. Returns 1 when it has that shape.
static int parse_marker(const char *marker, int *stdio, int *input, int *ring, const char **token) {
    const char *colon = strrchr(marker, ':');
    if (colon == NULL || strlen(colon + 1) != PP_TOKEN_LENGTH) return 0;
    for (const char *c = colon + 1; *c != 0; c++) {
        if (!isxdigit((unsigned char)*c)) return 0;
    }
    *token = colon + 1;
    if (colon - marker == 5 && strncmp(marker, "stdio", 5) == 0) {
        *stdio = 1;
        return 1;
    }
    const char *end = marker;
    *input = parse_fd(marker, &end);
    if (*input < 0) return 0;
    if (*end == ',') {
        *ring = parse_fd(end + 1, &end);
        if (*ring < 0) return 0;
    }
    return end == colon;
}

// A local worker's socket already holds the token when the worker starts (the pool writes it
// before spawning): checked without waiting, and taken only when it matches.
static int token_on_socket(int fd, const char *token) {
    char buffer[PP_TOKEN_LENGTH];
    ssize_t n;
    do n = recv(fd, buffer, sizeof buffer, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n != PP_TOKEN_LENGTH || memcmp(buffer, token, PP_TOKEN_LENGTH) != 0) return 0;
    do n = recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return n == PP_TOKEN_LENGTH;
}

// A launched worker's token comes through the launcher (ssh may still be forwarding it), so it
// is waited for, at most PP_TOKEN_WAIT_SECONDS; never from a terminal.
static int token_on_stdin(const char *token) {
    if (isatty(0)) return 0;
    struct timespec now, deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += PP_TOKEN_WAIT_SECONDS;
    char buffer[PP_TOKEN_LENGTH];
    size_t got = 0;
    while (got < PP_TOKEN_LENGTH) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left = (deadline.tv_sec - now.tv_sec) * 1000 + (deadline.tv_nsec - now.tv_nsec) / 1000000;
        if (left <= 0) return 0;
        struct pollfd ready = {.fd = 0, .events = POLLIN};
        int polled = poll(&ready, 1, (int)left);
        if (polled < 0 && errno == EINTR) continue;
        if (polled <= 0) return 0;
        ssize_t n = read(0, buffer + got, PP_TOKEN_LENGTH - got);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0 || memcmp(buffer + got, token + got, (size_t)n) != 0) return 0;
        got += (size_t)n;
    }
    return 1;
}

// Runs before `main` in every process of this executable; in a worker it runs the worker loop
// and exits, so the program's `main` never runs there.
static void processpool_worker_hook(int argc, char **argv, char **envp) {
    const char *marker = getenv(PP_WORKER_ENV);
    if (marker == NULL) return;
    // A fork server ("forkserver:<token>", its socket on 3) serves until its parent goes; it
    // returns here only in each worker it forks, with that worker's environment (and marker).
    size_t server_prefix = strlen(PP_FORK_SERVER_MARKER);
    if (strncmp(marker, PP_FORK_SERVER_MARKER ":", server_prefix + 1) == 0) {
        const char *token = marker + server_prefix + 1;
        int shaped = strlen(token) == PP_TOKEN_LENGTH;
        for (const char *c = token; shaped && *c != 0; c++) shaped = isxdigit((unsigned char)*c);
        if (!shaped || !token_on_socket(3, token)) {
            unsetenv(PP_WORKER_ENV);
            write_stderr("ProcessPool: ignoring " PP_WORKER_ENV " in the environment: this process was not "
                         "started by a process pool; main runs as usual\n");
            return;
        }
        unsetenv(PP_WORKER_ENV);
        // Asked once here rather than in every worker (a dlopen, which is not cheap).
        dispatch_shared = dispatch_is_shared();
        pp_fork_server_run(3, dispatch_shared);
        envp = environ;
        marker = getenv(PP_WORKER_ENV);
        if (marker == NULL) _exit(PP_EXIT_NO_ENTRY);
    }
    // Only a process the pool started is a worker: the marker must have the pool's shape and its
    // token must be waiting where the protocol runs. Anything else (the variable left in a
    // user's environment) is reported once, and `main` runs as usual.
    int stdio = 0, input = -1, ring = -1;
    const char *token = NULL;
    int valid = parse_marker(marker, &stdio, &input, &ring, &token);
    if (valid) valid = stdio ? token_on_stdin(token) : token_on_socket(input, token);
    if (!valid) {
        unsetenv(PP_WORKER_ENV);
        write_stderr("ProcessPool: ignoring " PP_WORKER_ENV " in the environment: this process was not "
                     "started by a process pool; main runs as usual\n");
        return;
    }
    int output = input;
    if (stdio) {
        if (take_stdio(&input, &output) != 0) _exit(PP_EXIT_NO_STDIO);
    } else {
        ring_fd = ring;
        // A local worker has a process group of its own, which is in the background of the
        // parent's terminal: a task that reads or writes there must get an error, not stop the
        // worker for good.
        signal(SIGTTIN, SIG_IGN);
        signal(SIGTTOU, SIG_IGN);
    }
    // Consumed before any user code runs: a child that goes on to `main` must not pass the
    // marker to processes it starts (that recursion is a fork bomb).
    unsetenv(PP_WORKER_ENV);
    started_as_worker = 1;
    if (processpool_worker_entry == NULL) _exit(PP_EXIT_NO_ENTRY);
    // Swift concurrency needs libdispatch. In a dynamically linked build it is a loaded shared
    // object, initialised before the executable's constructors. In a --static-swift-stdlib build
    // its initialiser is one of the executable's constructors that come after this one: run them
    // here, then the loop, and exit, so none runs twice and `main` never runs.
    if (!(dispatch_shared >= 0 ? dispatch_shared : dispatch_is_shared())) {
        if (!hook_in_init_array()) {
            write_stderr("ProcessPool: this worker cannot start before main: the executable was linked "
                         "without __init_array_start; link it with the system linker (ld, gold or lld)\n");
            _exit(PP_EXIT_NO_ENTRY);
        }
        for (pp_init_entry *entry = &processpool_worker_hook_entry + 1; entry < __init_array_end; entry++) {
            if (*entry != NULL && *entry != (pp_init_entry)-1) (*entry)(argc, argv, envp);
        }
    }
    processpool_worker_entry(input, output);
    _exit(0);
}

int pp_spawn_worker(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                    int child_fd, int ring, int stdio, int error_fd) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) return rc;
    rc = posix_spawnattr_init(&attr);
    if (rc != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return rc;
    }
    // dup2 onto 3 (or onto stdin and stdout for a launcher) clears close-on-exec there;
    // everything else above is closed so no descriptor of the parent (another worker's socket,
    // a user file) leaks into the worker.
    int first_closed = 4;
    // The pool's stderr pipe first, straight onto 2: its source is a fresh pipe end above 2,
    // and a stdio or socket source never sits on 2 (the parent keeps 0-2 open).
    if (error_fd >= 0) rc = posix_spawn_file_actions_adddup2(&actions, error_fd, 2);
    if (rc != 0) {
        posix_spawn_file_actions_destroy(&actions);
        posix_spawnattr_destroy(&attr);
        return rc;
    }
    if (stdio) {
        // Through a spare descriptor: dup2 of a descriptor onto itself would keep close-on-exec.
        int spare = child_fd == 3 ? 4 : 3;
        rc = posix_spawn_file_actions_adddup2(&actions, child_fd, spare);
        if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, spare, 0);
        if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, spare, 1);
        first_closed = 3;
    } else if (child_fd > 4 && (ring < 0 || ring > 4)) {
        // Both sources above the targets: straight there. (No spare descriptors, which near
        // the descriptor limit could land past it and fail with EBADF.)
        rc = posix_spawn_file_actions_adddup2(&actions, child_fd, 3);
        if (rc == 0 && ring >= 0) rc = posix_spawn_file_actions_adddup2(&actions, ring, 4);
        if (ring >= 0) first_closed = 5;
    } else {
        // Through spare descriptors above both sources: dup2 of a descriptor onto itself would
        // keep close-on-exec, and a source may sit where the other one goes.
        int spare = (child_fd > ring ? child_fd : ring) + 1;
        if (spare < 5) spare = 5;
        rc = posix_spawn_file_actions_adddup2(&actions, child_fd, spare);
        if (rc == 0 && ring >= 0) rc = posix_spawn_file_actions_adddup2(&actions, ring, spare + 1);
        if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, spare, 3);
        if (rc == 0 && ring >= 0) rc = posix_spawn_file_actions_adddup2(&actions, spare + 1, 4);
        if (ring >= 0) first_closed = 5;
    }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, first_closed);
#endif
    // The pool stops workers with SIGTERM, and a worker's own children need their exit status
    // (a host that ignores SIGCHLD would leave a nested pool nothing to reap), so both start at
    // their defaults. An ignored SIGINT stays ignored, as in CPython.
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGCHLD);
    sigset_t none;
    sigemptyset(&none);
    if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &defaults);
    if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &none);
    short flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK;
    // Every worker gets its own process group, so a terminal's Ctrl-C (and its quit and stop keys)
    // reaches only the parent, which decides; a worker still ends as soon as the parent does (end of
    // stream on its socket). The pool signals a launcher's group, so every process of its
    // pipeline stops.
    flags |= POSIX_SPAWN_SETPGROUP;
    if (rc == 0) rc = posix_spawnattr_setpgroup(&attr, 0);
    if (rc == 0) rc = posix_spawnattr_setflags(&attr, flags);
    // A launcher command is found through PATH, as a shell would.
    if (rc == 0) rc = stdio ? posix_spawnp(pid, path, &actions, &attr, argv, envp)
                            : posix_spawn(pid, path, &actions, &attr, argv, envp);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    return rc;
}

int pp_hash_file(const char *path, unsigned long long *hash) {
    int fd;
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return errno;
    uint64_t h = 0xcbf29ce484222325ULL;
    unsigned char buffer[1 << 16];
    for (;;) {
        ssize_t n = read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int saved = errno;
            close(fd);
            return saved;
        }
        if (n == 0) break;
        for (ssize_t i = 0; i < n; i++) {
            h ^= buffer[i];
            h *= 0x100000001b3ULL;
        }
    }
    close(fd);
    *hash = h;
    return 0;
}
