/*
 * Connections per second, for scripts/bench-sandbox.sh.
 *
 *   connrate SECONDS [client-first|server-first]
 *
 * One process listens on 127.0.0.1 (kernel-chosen port) and, for SECONDS,
 * loops: socket + blocking connect, accept, one byte client -> server,
 * then closes both sockets, the client's first (default) or the server's
 * first. The order matters natively: the side that closes first keeps the
 * TIME_WAIT, and Linux's ephemeral-port search in connect() slows down a
 * lot when the client's ports sit in TIME_WAIT. Prints
 * "conns <n> secs <elapsed> conn_per_s <rate>" and exits 0; on any error
 * prints the failing call and iteration to stderr and exits 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define DIE(what) do { \
        fprintf(stderr, "connrate: %s (iteration %ld): %s\n", what, n, strerror(errno)); \
        return 1; \
    } while (0)

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "client-first") != 0 &&
                                 strcmp(argv[2], "server-first") != 0)) {
        fprintf(stderr, "usage: %s SECONDS [client-first|server-first]\n", argv[0]);
        return 2;
    }
    double secs = atof(argv[1]);
    int server_first = argc == 3 && strcmp(argv[2], "server-first") == 0;
    long n = 0;

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
    if (sa.sin_port == 0 || sa.sin_addr.s_addr != htonl(INADDR_LOOPBACK)) {
        fprintf(stderr, "connrate: getsockname gave %s:%u\n",
                inet_ntoa(sa.sin_addr), ntohs(sa.sin_port));
        return 1;
    }

    double t0 = now_s(), t1 = t0;
    while (t1 - t0 < secs) {
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
        int first = server_first ? a : c, second = server_first ? c : a;
        if (close(first) != 0)
            DIE(server_first ? "close(server)" : "close(client)");
        if (close(second) != 0)
            DIE(server_first ? "close(client)" : "close(server)");
        n++;
        t1 = now_s();
    }
    printf("conns %ld secs %.3f conn_per_s %.1f\n", n, t1 - t0, (double)n / (t1 - t0));
    return 0;
}
