/*
 * Latency of herder's control API: GET /v1/services over the Unix socket.
 *
 *   ps SOCKET seq N     N requests one after another
 *   ps SOCKET conc N    N requests at once, from N threads released together
 *
 * Each request is a new connection, as `herd ps` makes. Prints one latency in
 * microseconds a line (connect to the end of the answer); exits 1 if an answer
 * is not 200. In C so that the client costs the measurement nothing: a Python
 * event loop serving 100 connections adds more than the server takes. For the
 * same reason, in `conc` each thread has touched its receive buffer before the
 * start (the first copy into fresh pages faults them in, ~5 a request), and no
 * thread exits until all have their answer: on 2 cores, those page faults and
 * 100 thread exits ran alongside the requests still being timed and took more
 * of the window than the server did.
 *
 * The process's descriptor table is also grown, before the start, to hold every
 * thread's socket. It starts with room for 64 descriptors, and growing it in a
 * process with several threads waits for an RCU grace period (synchronize_rcu
 * in the kernel's expand_fdtable), a few to 20 milliseconds here, while every
 * thread opening a socket meanwhile sleeps in expand_files. The 62nd socket open
 * at once (3 descriptors are stdio) paid that inside the timed window: not with
 * a server that answers each request as it comes (the floor; sockets close
 * about as fast as they open), but with one that answers a burst together
 * (herder), whose rounds then had 39 requests arrive 5-20 ms late. Separate
 * clients (`herd ps` run 100 times) each have a table of their own and never
 * pay it.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char request[] =
    "GET /v1/services HTTP/1.1\r\nHost: herd\r\nConnection: close\r\n\r\n";
static struct sockaddr_un addr = { .sun_family = AF_UNIX };
static pthread_barrier_t go, done;

/* Big enough for the answer to 500 services in one read or a few. */
#define BUF 65536

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* One request; its latency in microseconds, or -1. */
static double one(char *buf)
{
    char head[16] = "";
    size_t got = 0;
    double t = now_us();
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        return -1;
    if (write(fd, request, sizeof request - 1) != (ssize_t)(sizeof request - 1))
        return -1;
    for (;;) {
        ssize_t n = read(fd, buf, BUF);
        if (n <= 0)
            break;
        if (got < sizeof head - 1) {
            size_t k = sizeof head - 1 - got < (size_t)n ? sizeof head - 1 - got : (size_t)n;
            memcpy(head + got, buf, k);
        }
        got += (size_t)n;
    }
    close(fd);
    t = now_us() - t;
    return strncmp(head, "HTTP/1.1 200", 12) == 0 ? t : -1;
}

static void *worker(void *out)
{
    static __thread char buf[BUF];
    memset(buf, 0, sizeof buf);
    pthread_barrier_wait(&go);
    *(double *)out = one(buf);
    pthread_barrier_wait(&done);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: ps SOCKET seq|conc N\n");
        return 2;
    }
    strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
    int n = atoi(argv[3]);
    double *lat = calloc((size_t)n, sizeof *lat);
    if (strcmp(argv[2], "seq") == 0) {
        static char buf[BUF];
        for (int i = 0; i < n; i++)
            lat[i] = one(buf);
    } else {
        /* Room for every thread's socket, made before the start: see the note
         * at the top. Standard output is there: the latencies go to it. */
        int top = dup2(1, n + 64);
        if (top < 0) {
            perror("ps: dup2");
            return 2;
        }
        close(top);
        pthread_t *th = calloc((size_t)n, sizeof *th);
        pthread_barrier_init(&go, NULL, (unsigned)n);
        pthread_barrier_init(&done, NULL, (unsigned)n);
        for (int i = 0; i < n; i++)
            pthread_create(&th[i], NULL, worker, &lat[i]);
        for (int i = 0; i < n; i++)
            pthread_join(th[i], NULL);
    }
    int bad = 0;
    for (int i = 0; i < n; i++) {
        bad |= lat[i] < 0;
        printf("%.1f\n", lat[i]);
    }
    return bad;
}
