/*
 * Holds many TCP connections open, for the Sentry-memory row of
 * scripts/bench-sandbox.sh.
 *
 *   manyconn N
 *
 * Prints "IDLE" and waits for a line on stdin; then listens on 127.0.0.1,
 * opens N client connections to itself, accepts each one and moves one
 * byte over it (so every connection is really established), prints
 * "READY <N>" and waits for EOF on stdin, then exits 0. On any error it
 * prints the failing call to stderr and exits 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define DIE(what) do { \
        fprintf(stderr, "manyconn: %s (connection %ld): %s\n", what, i, strerror(errno)); \
        return 1; \
    } while (0)

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s N\n", argv[0]);
        return 2;
    }
    long n = atol(argv[1]), i = -1;
    if (n <= 0)
        return 2;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)(2 * n + 16)) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            DIE("setrlimit(RLIMIT_NOFILE)");
        if (rl.rlim_cur < (rlim_t)(2 * n + 16)) {
            fprintf(stderr, "manyconn: RLIMIT_NOFILE %lu too small\n", (unsigned long)rl.rlim_cur);
            return 1;
        }
    }

    char line[64];
    printf("IDLE\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) {
        fprintf(stderr, "manyconn: stdin closed before go\n");
        return 1;
    }

    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0)
        DIE("socket(listener)");
    struct sockaddr_in sa = { .sin_family = AF_INET };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(l, (struct sockaddr *)&sa, sizeof sa) != 0)
        DIE("bind");
    if (listen(l, 128) != 0)
        DIE("listen");
    socklen_t sl = sizeof sa;
    if (getsockname(l, (struct sockaddr *)&sa, &sl) != 0)
        DIE("getsockname");

    int *fds = calloc(2 * (size_t)n, sizeof *fds);
    if (!fds)
        DIE("calloc");
    for (i = 0; i < n; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0)
            DIE("socket(client)");
        if (connect(c, (struct sockaddr *)&sa, sizeof sa) != 0)
            DIE("connect");
        int a = accept(l, NULL, NULL);
        if (a < 0)
            DIE("accept");
        char b = 'x';
        if (write(c, &b, 1) != 1)
            DIE("write");
        b = 0;
        if (read(a, &b, 1) != 1 || b != 'x')
            DIE("read");
        fds[2 * i] = c;
        fds[2 * i + 1] = a;
    }

    printf("READY %ld\n", n);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin))
        ;
    return 0;
}
