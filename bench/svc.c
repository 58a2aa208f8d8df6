/*
 * The service every benchmark scenario runs, under herder and under each peer.
 *
 *   svc MARKER MODE SOCKET [ARG]
 *
 * MARKER only has to be in argv: the harness finds survivors by scanning
 * /proc/PID/cmdline for it, and children made by fork keep their parent's argv.
 * On start the program sends one datagram to the Unix socket SOCKET holding its
 * CLOCK_MONOTONIC time in nanoseconds, so "all N are running" is measured by
 * the services themselves, not by polling.
 *
 * Modes:
 *   wait      exit 0 on SIGTERM
 *   stubborn  ignore SIGTERM
 *   escape    wait, after leaving one daemon behind (fork, setsid, fork)
 *   tree      wait, after forking a tree of ARG processes in all (itself counted)
 *   crash     exit 1 at once
 *   orphans   wait, after leaving ARG orphans that exit 20 ms later
 *   flaky     exit 1 after a random 20-500 ms (for the soak test)
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static void on_term(int sig)
{
    (void)sig;
    _exit(0);
}

static void hello(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    struct timespec ts;
    char msg[32];
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return;
    strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int len = snprintf(msg, sizeof msg, "%lld",
                       (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    /* Blocking: a full queue delays the start, it never loses the count. */
    sendto(fd, msg, (size_t)len, 0, (struct sockaddr *)&addr, sizeof addr);
    close(fd);
}

static void idle(void)
{
    for (;;)
        pause();
}

/* Forks children until this subtree holds `n` processes, four children a node. */
static void tree(long n)
{
    long left = n - 1;
    while (left > 0) {
        long share = (left + 3) / 4;
        if (share > left)
            share = left;
        for (int i = 0; i < 4 && left > 0; i++) {
            long take = share < left ? share : left;
            left -= take;
            pid_t pid = fork();
            if (pid == 0) {
                signal(SIGTERM, SIG_DFL);
                signal(SIGCHLD, SIG_DFL);
                tree(take);
                idle();
            }
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: svc MARKER MODE SOCKET [ARG]\n");
        return 2;
    }
    const char *mode = argv[2];
    long arg = argc > 4 ? atol(argv[4]) : 0;

    signal(SIGTERM, on_term);
    /* The intermediate children of escape and orphans are reaped by the kernel:
     * every zombie left is then one the supervisor failed to reap. */
    signal(SIGCHLD, SIG_IGN);
    if (strcmp(mode, "crash") == 0) {
        hello(argv[3]);
        return 1;
    }
    if (strcmp(mode, "flaky") == 0) {
        hello(argv[3]);
        srand((unsigned)getpid());
        usleep((useconds_t)(20000 + rand() % 480000));
        return 1;
    }
    if (strcmp(mode, "stubborn") == 0) {
        signal(SIGTERM, SIG_IGN);
    } else if (strcmp(mode, "escape") == 0) {
        if (fork() == 0) {
            setsid();
            if (fork() == 0) {
                signal(SIGTERM, SIG_DFL);
                signal(SIGCHLD, SIG_DFL);
                idle();
            }
            _exit(0);
        }
    } else if (strcmp(mode, "tree") == 0) {
        tree(arg);
    } else if (strcmp(mode, "orphans") == 0) {
        for (long i = 0; i < arg; i++) {
            if (fork() == 0) {
                if (fork() == 0) {
                    signal(SIGCHLD, SIG_DFL);
                    usleep(20000);
                    _exit(0);
                }
                _exit(0);
            }
        }
    } else if (strcmp(mode, "wait") != 0) {
        fprintf(stderr, "svc: unknown mode %s\n", mode);
        return 2;
    }
    hello(argv[3]);
    idle();
}
