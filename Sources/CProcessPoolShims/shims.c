// The pre-main worker hook and posix_spawn's close-all-other-descriptors action: the two things
// Swift cannot do itself.
#define _GNU_SOURCE
#include "CProcessPoolShims.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
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

extern char **environ;

// Defined in Swift (Worker/WorkerEntry.swift): runs the worker loop and never returns.
extern void processpool_worker_entry(int input, int output) __attribute__((weak));

static int deferred_input = -1;
static int deferred_output = -1;
static int ring_fd = -1;
static int started_as_worker = 0;

int pp_take_ring_fd(void) {
    int fd = ring_fd;
    ring_fd = -1;
    return fd;
}

int pp_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

int pp_take_deferred_worker_fds(int *input, int *output) {
    *input = deferred_input;
    *output = deferred_output;
    deferred_input = -1;
    deferred_output = -1;
    return *input;
}

int pp_started_as_worker(void) { return started_as_worker; }

char *const *pp_environ(void) { return environ; }

void pp_set_thread_name(const char *name) { pthread_setname_np(pthread_self(), name); }

int pp_set_child_subreaper(int on) { return prctl(PR_SET_CHILD_SUBREAPER, on, 0, 0, 0); }

int pp_available_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int count = CPU_COUNT(&set);
        if (count > 0) return count;
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)online : 1;
}

// Frame kind 'awaiting bootstrap' (see Wire/FrameKind.swift): tells the parent that the worker
// loop waits for the documented call in `main`, so a missing call is reported, not waited on.
static void send_awaiting_bootstrap(int fd) {
    unsigned char frame[13] = {9, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0};
    ssize_t n;
    do {
        n = send(fd, frame, sizeof frame, MSG_NOSIGNAL);
        // A pipe (a worker behind ssh): plain write, a dead reader is a dead parent anyway.
        if (n < 0 && errno == ENOTSOCK) n = write(fd, frame, sizeof frame);
    } while (n < 0 && errno == EINTR);
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
    close(null);
    return 0;
}

__attribute__((constructor)) static void processpool_worker_hook(void) {
    const char *marker = getenv(PP_WORKER_ENV);
    if (marker == NULL) return;
    int input = -1, output = -1;
    if (strcmp(marker, "stdio") == 0) {
        if (take_stdio(&input, &output) != 0) _exit(74);
    } else {
        input = output = atoi(marker);
        const char *ring = strchr(marker, ',');
        if (ring != NULL) ring_fd = atoi(ring + 1);
    }
    // Consumed before any user code runs: a child that goes on to `main` must not pass the
    // marker to processes it starts (that recursion is a fork bomb).
    unsetenv(PP_WORKER_ENV);
    started_as_worker = 1;
    if (input < 0) return;
    // Swift concurrency needs libdispatch. In a dynamically linked build it is a loaded shared
    // object and usable here; in a --static-swift-stdlib build it is not initialised before
    // main, so the loop waits for ProcessPoolWorker.bootstrap() in main.
    void *dispatch = dlopen("libdispatch.so", RTLD_NOLOAD | RTLD_LAZY);
    if (dispatch != NULL && processpool_worker_entry != NULL) {
        dlclose(dispatch);
        processpool_worker_entry(input, output);
        _exit(0);
    }
    deferred_input = input;
    deferred_output = output;
    send_awaiting_bootstrap(output);
}

int pp_spawn_worker(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                    int child_fd, int ring, int stdio) {
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
    if (stdio) {
        // Through a spare descriptor: dup2 of a descriptor onto itself would keep close-on-exec.
        int spare = child_fd == 3 ? 4 : 3;
        rc = posix_spawn_file_actions_adddup2(&actions, child_fd, spare);
        if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, spare, 0);
        if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, spare, 1);
        first_closed = 3;
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
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    sigset_t none;
    sigemptyset(&none);
    if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &defaults);
    if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &none);
    short flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK;
    // A launcher gets its own process group: the pool signals the group, so every process of a
    // launcher pipeline stops, and a terminal's Ctrl-C reaches only the parent (whose exit
    // closes the socket and so ends the workers).
    if (stdio) flags |= POSIX_SPAWN_SETPGROUP;
    if (rc == 0 && stdio) rc = posix_spawnattr_setpgroup(&attr, 0);
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
