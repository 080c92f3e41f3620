/*
 * Syscall round-trip cost, for scripts/bench-sandbox.sh.
 *
 *   trap getsockopt N   N x getsockopt(fd, SOL_SOCKET, SO_TYPE) on a TCP
 *                       socket (trapped to the Sentry inside smolvisor)
 *   trap getppid N      N x getppid() (never trapped)
 *
 * Prints "ns_per_call <float>" and exits 0; on any error prints the reason
 * to stderr and exits 1. Every getsockopt answer is checked.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int one_getsockopt(int fd, long i)
{
    int type = -1;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
        fprintf(stderr, "trap: getsockopt #%ld: %s\n", i, strerror(errno));
        return -1;
    }
    if (type != SOCK_STREAM || len != sizeof type) {
        fprintf(stderr, "trap: getsockopt #%ld: SO_TYPE=%d len=%u, want %d len=%zu\n",
                i, type, (unsigned)len, SOCK_STREAM, sizeof type);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s getsockopt|getppid N\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    long n = atol(argv[2]);
    if (n <= 0) {
        fprintf(stderr, "trap: bad N\n");
        return 2;
    }
    long warm = n / 20 + 1;

    if (strcmp(mode, "getsockopt") == 0) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) {
            fprintf(stderr, "trap: socket: %s\n", strerror(errno));
            return 1;
        }
        for (long i = 0; i < warm; i++)
            if (one_getsockopt(fd, i))
                return 1;
        double t0 = now_ns();
        for (long i = 0; i < n; i++)
            if (one_getsockopt(fd, i))
                return 1;
        double t1 = now_ns();
        printf("ns_per_call %.1f\n", (t1 - t0) / (double)n);
        close(fd);
    } else if (strcmp(mode, "getppid") == 0) {
        long want = syscall(SYS_getppid);
        for (long i = 0; i < warm; i++)
            (void)syscall(SYS_getppid);
        double t0 = now_ns();
        for (long i = 0; i < n; i++) {
            if (syscall(SYS_getppid) != want) {
                fprintf(stderr, "trap: getppid changed\n");
                return 1;
            }
        }
        double t1 = now_ns();
        printf("ns_per_call %.1f\n", (t1 - t0) / (double)n);
    } else {
        fprintf(stderr, "trap: unknown mode %s\n", mode);
        return 2;
    }
    return 0;
}
