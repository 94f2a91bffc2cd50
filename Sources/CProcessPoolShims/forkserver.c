// The fork server: a process of this executable that stops before any runtime thread exists (in
// the pre-main hook, already loaded and linked) and forks local workers on request, which costs
// a fraction of starting the executable afresh. The parent talks to it over a socket pair: a
// spawn request carries the worker's descriptors (SCM_RIGHTS), its environment and its working
// directory; a wait request reaps one of its workers and returns the status. It reaps only when
// asked, so a worker's pid stays its own (a zombie at worst) until the pool has reaped it.
#define _GNU_SOURCE
#include "CProcessPoolShims.h"
#include "forkserver_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

enum { PP_FS_SPAWN = 1, PP_FS_WAIT = 2, PP_FS_PREPARE = 3 };

// Defined in Swift (Worker/WorkerEntry.swift): resolves a task or initializer type by name, so
// that the workers forked afterwards find it in their caches (the lookup is most of a fresh
// worker's start-up). Called only where Swift can run before `main` (a dynamically linked build).
extern void processpool_fork_server_prepare(const char *name) __attribute__((weak));
// The descriptors a spawn request may carry, in this order, each present when its bit of `flags`
// is set: the worker's socket, its reply ring, its stdin, stdout and stderr (a standard stream
// the parent has closed is absent, and closed in the worker too), its working directory.
enum { PP_FS_SOCKET, PP_FS_RING, PP_FS_STDIN, PP_FS_STDOUT, PP_FS_STDERR, PP_FS_CWD, PP_FS_SLOTS };

// A request: the descriptors travel with its first byte; `length` bytes of environment follow.
struct pp_fs_request {
    uint32_t kind;
    uint32_t flags;
    int32_t pid;
    int32_t nohang;
    uint64_t length;
};

// A reply: a spawn's pid (or -1), a wait's result (the pid, 0 while it runs, or -1) and status;
// `error` is an errno value when the result is -1.
struct pp_fs_reply {
    int32_t result;
    int32_t status;
    int32_t error;
    int32_t unused;
};

// The largest environment a request may carry.
#define PP_FS_MAX_ENVIRONMENT (64u << 20)

static int write_all(int fd, const void *bytes, size_t count) {
    const char *at = bytes;
    while (count > 0) {
        ssize_t n = send(fd, at, count, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        at += n;
        count -= (size_t)n;
    }
    return 0;
}

static int read_all(int fd, void *bytes, size_t count) {
    char *at = bytes;
    while (count > 0) {
        ssize_t n = read(fd, at, count);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n == 0) errno = EPIPE;
            return -1;
        }
        at += n;
        count -= (size_t)n;
    }
    return 0;
}

static void close_from(int first) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)first, ~0u, 0) == 0) return;
#endif
    long limit = sysconf(_SC_OPEN_MAX);
    if (limit < 0 || limit > 1 << 20) limit = 1 << 20;
    for (int fd = first; fd < limit; fd++) close(fd);
}

// In the forked child: the descriptors, process group, signals, working directory and
// environment a posix_spawned worker gets (see pp_spawn_worker). Exits on failure, which the
// pool reports as a worker that failed to start.
static int forked_by_server = 0;

int pp_forked_by_server(void) { return forked_by_server; }

static void become_worker(pid_t server, int fds[PP_FS_SLOTS], char *environment, uint64_t length) {
    // The server ends when the parent does; its workers go with it, so they need no watchdog
    // thread of their own. The server is single-threaded, so its death is this thread's parent's.
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != server) _exit(PP_EXIT_NO_ENTRY);
    forked_by_server = 1;
    if (setpgid(0, 0) != 0) _exit(PP_EXIT_NO_ENTRY);
    // Above every target first, so no dup2 overwrites a source still to be moved.
    for (int i = 0; i < PP_FS_SLOTS; i++) {
        if (fds[i] < 0) continue;
        int moved = fcntl(fds[i], F_DUPFD_CLOEXEC, 8);
        if (moved < 0) _exit(PP_EXIT_NO_ENTRY);
        fds[i] = moved;
    }
    // The standard streams the parent has now (not those it had when the server started).
    for (int stream = 0; stream < 3; stream++) {
        int source = fds[PP_FS_STDIN + stream];
        if (source < 0) {
            close(stream);
        } else if (dup2(source, stream) < 0) {
            _exit(PP_EXIT_NO_ENTRY);
        }
    }
    if (dup2(fds[PP_FS_SOCKET], 3) < 0) _exit(PP_EXIT_NO_ENTRY);  // replaces the server's socket
    if (fds[PP_FS_RING] >= 0 && dup2(fds[PP_FS_RING], 4) < 0) _exit(PP_EXIT_NO_ENTRY);
    if (fds[PP_FS_CWD] >= 0 && fchdir(fds[PP_FS_CWD]) != 0) _exit(PP_EXIT_NO_ENTRY);
    close_from(fds[PP_FS_RING] >= 0 ? 5 : 4);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    // The environment: `length` bytes of NUL-terminated entries, owned by this process now.
    size_t count = 0;
    for (uint64_t i = 0; i < length; i++) count += environment[i] == 0;
    char **entries = malloc((count + 1) * sizeof *entries);
    if (entries == NULL) _exit(PP_EXIT_NO_ENTRY);
    size_t index = 0;
    for (uint64_t i = 0; i < length; i += strlen(environment + i) + 1) entries[index++] = environment + i;
    entries[index] = NULL;
    environ = entries;
}

static void reply(int sock, int32_t result, int32_t status, int32_t error) {
    struct pp_fs_reply answer = {result, status, error, 0};
    if (write_all(sock, &answer, sizeof answer) != 0) _exit(0);  // the parent is gone
}

int pp_fork_server_run(int sock, int swift_ready) {
    pid_t server = getpid();
    // Zombies stay until the parent asks: a worker's pid must not be reused while the pool
    // may still signal it.
    signal(SIGCHLD, SIG_DFL);
    // Blocked too: nothing here waits for it, and each worker's exit would interrupt a read.
    // (A forked worker sets its mask to empty.)
    sigset_t child;
    sigemptyset(&child);
    sigaddset(&child, SIGCHLD);
    sigprocmask(SIG_BLOCK, &child, NULL);
    // Each request brings the standard streams its worker gets: the server keeps none of the
    // parent's (a pipe the parent closes must not stay open here for as long as it lives).
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        for (int stream = 0; stream < 3; stream++) {
            if (null != stream) dup2(null, stream);
        }
        if (null > 2) close(null);
    }
    for (;;) {
        struct pp_fs_request request;
        char control[CMSG_SPACE(PP_FS_SLOTS * sizeof(int))];
        struct iovec part = {.iov_base = &request, .iov_len = sizeof request};
        struct msghdr message = {
            .msg_iov = &part, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
        ssize_t got;
        do {
            got = recvmsg(sock, &message, MSG_CMSG_CLOEXEC);
        } while (got < 0 && errno == EINTR);
        if (got <= 0) _exit(0);  // the parent is gone
        int received[PP_FS_SLOTS];
        int received_count = 0;
        for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header != NULL;
             header = CMSG_NXTHDR(&message, header)) {
            if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
            size_t n = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < n && received_count < PP_FS_SLOTS; i++)
                memcpy(&received[received_count++], CMSG_DATA(header) + i * sizeof(int), sizeof(int));
        }
        if ((size_t)got < sizeof request && read_all(sock, (char *)&request + got, sizeof request - (size_t)got) != 0)
            _exit(0);
        if (request.kind == PP_FS_WAIT) {
            for (int i = 0; i < received_count; i++) close(received[i]);
            int status = 0;
            pid_t result;
            do {
                result = waitpid(request.pid, &status, request.nohang ? WNOHANG : 0);
            } while (result < 0 && errno == EINTR);
            reply(sock, result, status, result < 0 ? errno : 0);
            continue;
        }
        if (request.kind == PP_FS_PREPARE) {
            for (int i = 0; i < received_count; i++) close(received[i]);
            if (request.length > PP_FS_MAX_ENVIRONMENT) _exit(0);
            char *names = malloc(request.length + 1);
            if (names == NULL || read_all(sock, names, request.length) != 0) _exit(0);
            names[request.length] = 0;
            for (uint64_t i = 0; i < request.length; i += strlen(names + i) + 1) {
                if (swift_ready && processpool_fork_server_prepare != NULL) processpool_fork_server_prepare(names + i);
            }
            free(names);
            continue;
        }
        int fds[PP_FS_SLOTS];
        int next = 0;
        for (int slot = 0; slot < PP_FS_SLOTS; slot++)
            fds[slot] = (request.flags & (1u << slot)) && next < received_count ? received[next++] : -1;
        // Anything else is not this protocol: the parent is not a pool.
        if (request.kind != PP_FS_SPAWN || request.length > PP_FS_MAX_ENVIRONMENT || fds[PP_FS_SOCKET] < 0 ||
            next != received_count)
            _exit(0);
        char *environment = malloc(request.length + 1);
        if (environment == NULL || read_all(sock, environment, request.length) != 0) _exit(0);
        environment[request.length] = 0;
        pid_t pid = fork();
        if (pid == 0) {
            become_worker(server, fds, environment, request.length);
            return 0;
        }
        int saved = errno;
        // The worker's ends are the worker's alone: the parent must see end of stream when it dies.
        for (int i = 0; i < received_count; i++) close(received[i]);
        free(environment);
        reply(sock, pid < 0 ? -1 : pid, 0, pid < 0 ? saved : 0);
    }
}

static int send_request(int server, const struct pp_fs_request *request, const int *fds, int count) {
    char control[CMSG_SPACE(PP_FS_SLOTS * sizeof(int))];
    memset(control, 0, sizeof control);
    struct iovec part = {.iov_base = (void *)request, .iov_len = sizeof *request};
    struct msghdr message = {.msg_iov = &part, .msg_iovlen = 1};
    if (count > 0) {
        message.msg_control = control;
        message.msg_controllen = CMSG_SPACE(count * sizeof(int));
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(count * sizeof(int));
        memcpy(CMSG_DATA(header), fds, count * sizeof(int));
    }
    ssize_t sent;
    do {
        sent = sendmsg(server, &message, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent <= 0) return sent < 0 ? errno : EPIPE;
    // The descriptors went with the first byte; the rest of the header is plain bytes.
    if ((size_t)sent < sizeof *request &&
        write_all(server, (const char *)request + sent, sizeof *request - (size_t)sent) != 0)
        return PP_FORK_SERVER_LOST;
    return 0;
}

int pp_fork_server_send_spawn(int server, int child_fd, int ring_fd, int error_fd, const char *environment,
                              unsigned long length) {
    struct pp_fs_request request = {PP_FS_SPAWN, 0, 0, 0, length};
    int slots[PP_FS_SLOTS] = {child_fd, ring_fd, 0, 1, error_fd >= 0 ? error_fd : 2, -1};
    int fds[PP_FS_SLOTS];
    int count = 0;
    for (int slot = 0; slot < PP_FS_CWD; slot++) {
        // A closed standard stream (or no ring) is left out, and so is one that an exec would
        // close (libdispatch may have put its own descriptors there in a program started without
        // them). Checked before the directory is opened, which may take the number of a closed one.
        int flags = slots[slot] < 0 ? -1 : fcntl(slots[slot], F_GETFD);
        if (flags < 0) continue;
        if (slots[slot] == slot - PP_FS_STDIN && (flags & FD_CLOEXEC)) continue;
        request.flags |= 1u << slot;
        fds[count++] = slots[slot];
    }
    // The working directory as it is now (none if it cannot be opened: the server's is kept).
    int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (cwd >= 0) {
        request.flags |= 1u << PP_FS_CWD;
        fds[count++] = cwd;
    }
    int rc = send_request(server, &request, fds, count);
    if (cwd >= 0) close(cwd);
    if (rc != 0) return rc;
    if (length > 0 && write_all(server, environment, length) != 0) return PP_FORK_SERVER_LOST;
    return 0;
}

int pp_fork_server_prepare(int server, const char *names, unsigned long length) {
    struct pp_fs_request request = {PP_FS_PREPARE, 0, 0, 0, length};
    int rc = send_request(server, &request, NULL, 0);
    if (rc != 0) return rc;
    return write_all(server, names, length) == 0 ? 0 : PP_FORK_SERVER_LOST;
}

int pp_fork_server_send_wait(int server, pid_t pid, int nohang) {
    struct pp_fs_request request = {PP_FS_WAIT, 0, pid, nohang, 0};
    return send_request(server, &request, NULL, 0);
}

int pp_fork_server_read_reply(int server, int nonblocking, int *result, int *status, int *error) {
    struct pp_fs_reply answer;
    ssize_t got;
    do {
        got = recv(server, &answer, sizeof answer, nonblocking ? MSG_DONTWAIT : 0);
    } while (got < 0 && errno == EINTR);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    if (got <= 0) return PP_FORK_SERVER_LOST;
    // The server writes a reply at once: the rest of one begun is on its way.
    if ((size_t)got < sizeof answer && read_all(server, (char *)&answer + got, sizeof answer - (size_t)got) != 0)
        return PP_FORK_SERVER_LOST;
    *result = answer.result;
    *status = answer.status;
    *error = answer.error;
    return 1;
}
