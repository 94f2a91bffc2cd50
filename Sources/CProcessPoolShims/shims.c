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
#include <sys/socket.h>

extern char **environ;

// Defined in Swift (Worker/WorkerEntry.swift): runs the worker loop and never returns.
extern void processpool_worker_entry(int fd) __attribute__((weak));

static int deferred_fd = -1;
static int started_as_worker = 0;

int pp_deferred_worker_fd(void) { return deferred_fd; }

int pp_take_deferred_worker_fd(void) {
    int fd = deferred_fd;
    deferred_fd = -1;
    return fd;
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
    } while (n < 0 && errno == EINTR);
}

__attribute__((constructor)) static void processpool_worker_hook(void) {
    const char *marker = getenv(PP_WORKER_ENV);
    if (marker == NULL) return;
    int fd = atoi(marker);
    // Consumed before any user code runs: a child that goes on to `main` must not pass the
    // marker to processes it starts (that recursion is a fork bomb).
    unsetenv(PP_WORKER_ENV);
    started_as_worker = 1;
    if (fd < 0) return;
    // Swift concurrency needs libdispatch. In a dynamically linked build it is a loaded shared
    // object and usable here; in a --static-swift-stdlib build it is not initialised before
    // main, so the loop waits for ProcessPoolWorker.bootstrap() in main.
    void *dispatch = dlopen("libdispatch.so", RTLD_NOLOAD | RTLD_LAZY);
    if (dispatch != NULL && processpool_worker_entry != NULL) {
        dlclose(dispatch);
        processpool_worker_entry(fd);
        _exit(0);
    }
    deferred_fd = fd;
    send_awaiting_bootstrap(fd);
}

int pp_spawn_worker(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                    int child_fd) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) return rc;
    rc = posix_spawnattr_init(&attr);
    if (rc != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return rc;
    }
    // dup2 onto 3 clears close-on-exec there; everything else above 2 is closed so no
    // descriptor of the parent (another worker's socket, a user file) leaks into the worker.
    if (child_fd == 3) {
        // dup2 to itself keeps close-on-exec, so move it away first.
        rc = posix_spawn_file_actions_adddup2(&actions, child_fd, 4);
        if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, 4, 3);
    } else {
        rc = posix_spawn_file_actions_adddup2(&actions, child_fd, 3);
    }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, 4);
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
    if (rc == 0) rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    if (rc == 0) rc = posix_spawn(pid, path, &actions, &attr, argv, envp);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    return rc;
}
