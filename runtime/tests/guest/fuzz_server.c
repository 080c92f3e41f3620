/* A small TCP server for the fuzz tests: `fuzz_server PORT echo` echoes
 * each connection's bytes back until end of file; `fuzz_server PORT
 * planted` reads a message (until end of file) and answers "ok", but has
 * a planted out-of-bounds write: a message that starts "FUZZ!" followed
 * by a non-zero byte N writes N * 16 MiB past a 16-byte buffer (SIGSEGV).
 * `fuzz_server PORT deep` has the same write behind a message that starts
 * "DP", tested one byte at a time (what coverage feedback finds, built
 * with afl_map.c and -fsanitize-coverage=trace-pc). `fuzz_server PORT
 * udp` is `planted` over UDP: each datagram is a message, answered "ok".
 * One connection at a time, as simple servers are. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char small[16];

static void oob_write(unsigned char n) {
    volatile char *p = small;
    p[(size_t)n << 24] = 1; /* the planted bug */
}

static void handle(const unsigned char *buf, size_t n) {
    if (n >= 6 && memcmp(buf, "FUZZ!", 5) == 0)
        oob_write(buf[5]);
}

static void handle_deep(const unsigned char *buf, size_t n) {
    if (n >= 2 && buf[0] == 'D') {
        if (buf[1] == 'P')
            oob_write(0xff);
    }
}

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    int deep = strcmp(argv[2], "deep") == 0;
    int planted = deep || strcmp(argv[2], "planted") == 0;
    int udp = strcmp(argv[2], "udp") == 0;
    /* As servers do: a peer that resets is an error, not a death. */
    signal(SIGPIPE, SIG_IGN);
    int s = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    if (bind(s, (struct sockaddr *)&a, sizeof a) || (!udp && listen(s, 128)))
        return 1;
    while (udp) {
        unsigned char buf[4096];
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        ssize_t r = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len);
        if (r < 0)
            continue;
        handle(buf, r);
        sendto(s, "ok\n", 3, 0, (struct sockaddr *)&peer, len);
    }
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0)
            continue;
        unsigned char buf[4096];
        size_t have = 0;
        ssize_t r;
        while ((r = read(c, buf + have, sizeof buf - have)) > 0) {
            if (!planted)
                (void)!write(c, buf + have, r);
            have += r;
            if (have == sizeof buf)
                have = 0;
        }
        if (planted) {
            if (deep)
                handle_deep(buf, have);
            else
                handle(buf, have);
            (void)!write(c, "ok\n", 3);
        }
        close(c);
    }
}
