/*
 * Blocking socket calls interrupted by signals at random moments.
 *
 *   signal_stress SEED ITERATIONS
 *
 * Each iteration picks one call that blocks (accept, connect, a datagram
 * receive through recvfrom/recvmsg/recv, a stream read, a stream write into
 * a full buffer, a datagram send) and, at random, whether SIGUSR1's handler
 * has SA_RESTART. A signaller thread sends SIGUSR1 to the calling thread at
 * random moments while a helper thread, after a random delay, does what the
 * call waits for. Between iterations come the histories that matter: reset
 * connections, UDP traffic, a listener closed and replaced, a fork whose
 * child uses and closes the inherited sockets.
 *
 * Checked: every call completes, or fails with EINTR only when SA_RESTART
 * is off; every connection and datagram arrives exactly once, in order,
 * with the right contents; every stream byte arrives once. A watchdog ends
 * the program with "HANG" when an iteration takes longer than 10 s. The
 * last line says "signal stress ok" and the counts.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FAIL(...)                                                              \
    do {                                                                       \
        fprintf(stderr, "FAIL seed=%llu iter=%d kind=%s restart=%d: ",        \
                (unsigned long long)seed, iter, kind_name, restart);          \
        fprintf(stderr, __VA_ARGS__);                                          \
        fprintf(stderr, "\n");                                                 \
        fflush(stderr);                                                        \
        _exit(1);                                                              \
    } while (0)

static uint64_t seed;
static int iter;
static const char *kind_name = "setup";
static int restart;

static pthread_t victim;
static atomic_int armed;
static atomic_int sending;
static atomic_int quit;
static atomic_long signals_sent;
static atomic_long handled;
static atomic_long progress;
static long eintr_seen;

static uint64_t rng_state;
static uint64_t rnd(void) {
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}
static unsigned below(unsigned n) { return (unsigned)(rnd() % n); }

static void sleep_us(unsigned us) {
    if (us == 0)
        return;
    struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void on_signal(int sig) {
    (void)sig;
    atomic_fetch_add(&handled, 1);
}

static void set_handler(int with_restart) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = with_restart ? SA_RESTART : 0;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        FAIL("sigaction: %s", strerror(errno));
}

/* Sends SIGUSR1 to the victim at random moments while armed. */
static void *signaller(void *arg) {
    uint64_t s = (uint64_t)(uintptr_t)arg | 1;
    while (!atomic_load(&quit)) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        unsigned wait = (unsigned)((s * 0x2545F4914F6CDD1DULL) % 400);
        sleep_us(wait + 20);
        atomic_store(&sending, 1);
        if (atomic_load(&armed)) {
            pthread_kill(victim, SIGUSR1);
            atomic_fetch_add(&signals_sent, 1);
        }
        atomic_store(&sending, 0);
    }
    return NULL;
}

/* Ends the program when the victim stops making progress. */
static void *watchdog(void *arg) {
    (void)arg;
    long last = -1;
    int still = 0;
    while (!atomic_load(&quit)) {
        sleep_us(500000);
        long now = atomic_load(&progress);
        if (now == last) {
            if (++still >= 20) {
                fprintf(stderr, "HANG seed=%llu iter=%d kind=%s restart=%d\n",
                        (unsigned long long)seed, iter, kind_name, restart);
                fflush(stderr);
                _exit(3);
            }
        } else {
            still = 0;
            last = now;
        }
    }
    return NULL;
}

/* A call returned -1: EINTR is allowed (and retried) only without SA_RESTART. */
static void interrupted(const char *what, int err) {
    if (err != EINTR)
        FAIL("%s: %s", what, strerror(err));
    if (restart)
        FAIL("%s: EINTR although SA_RESTART is set", what);
    eintr_seen++;
}

static struct sockaddr_in loopback(uint16_t port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static uint16_t port_of(int fd) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        FAIL("getsockname: %s", strerror(errno));
    return ntohs(a.sin_port);
}

static int new_listener(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 64) != 0)
        FAIL("listener: %s", strerror(errno));
    return fd;
}

static int new_udp(void) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = loopback(0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0)
        FAIL("udp socket: %s", strerror(errno));
    return fd;
}

/* Reads exactly n bytes (retrying after signals, EINTR checked). */
static void read_exact(int fd, void *buf, size_t n, const char *what) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0) {
            interrupted(what, errno);
            continue;
        }
        if (r == 0)
            FAIL("%s: end of file after %zu of %zu bytes", what, got, n);
        got += (size_t)r;
    }
}

/* The helper side reads/writes without signals: plain loops. */
static void helper_read_exact(int fd, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            FAIL("helper read: %s", r == 0 ? "end of file" : strerror(errno));
        got += (size_t)r;
    }
}

static void helper_write_all(int fd, const void *buf, size_t n) {
    size_t put = 0;
    while (put < n) {
        ssize_t r = write(fd, (const char *)buf + put, n - put);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            FAIL("helper write: %s", strerror(errno));
        put += (size_t)r;
    }
}

/* Shared state of the long-lived sockets. */
static int lst;                 /* the listener accept() waits on */
static uint16_t lst_port, udp_rx_port, udp_tx_port, st_b_port;
static int udp_rx, udp_tx;      /* a datagram receiver and its sender */
static int st_a, st_b;          /* an established connection: a -> b */
static uint64_t stream_pos;     /* bytes that went a -> b so far */
static uint32_t next_seq = 1;

/* Stream contents: byte i of the a -> b stream is (i * 7 + i / 251) & 0xff. */
static uint8_t pattern(uint64_t i) { return (uint8_t)((i * 7 + i / 251) & 0xff); }

static void fill_pattern(uint8_t *buf, size_t n, uint64_t from) {
    for (size_t i = 0; i < n; i++)
        buf[i] = pattern(from + i);
}

static void check_pattern(const uint8_t *buf, size_t n, uint64_t from) {
    for (size_t i = 0; i < n; i++)
        if (buf[i] != pattern(from + i))
            FAIL("stream byte %llu is %u, want %u", (unsigned long long)(from + i),
                 buf[i], pattern(from + i));
}

struct task {
    int kind;
    unsigned delay_us;
    uint32_t seq;
    size_t len;
    int fd;
    uint64_t from;
};

enum { K_ACCEPT, K_CONNECT, K_UDP_RECV, K_TCP_READ, K_TCP_WRITE, K_UDP_SEND, K_COUNT };
static const char *kind_names[K_COUNT] = {"accept", "connect", "udp-recv",
                                          "tcp-read", "tcp-write", "udp-send"};

static void *helper(void *arg) {
    struct task *t = arg;
    sleep_us(t->delay_us);
    switch (t->kind) {
    case K_ACCEPT: {
        /* Connect to the listener and send the sequence number. */
        int c = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = loopback(lst_port);
        while (connect(c, (struct sockaddr *)&a, sizeof a) != 0)
            if (errno != EINTR)
                FAIL("helper connect: %s", strerror(errno));
        helper_write_all(c, &t->seq, sizeof t->seq);
        close(c);
        break;
    }
    case K_CONNECT: {
        /* Accept the victim's connection and read its sequence number. */
        int c;
        while ((c = accept(lst, NULL, NULL)) < 0)
            if (errno != EINTR)
                FAIL("helper accept: %s", strerror(errno));
        uint32_t got;
        helper_read_exact(c, &got, sizeof got);
        if (got != t->seq)
            FAIL("connection carried %u, want %u", got, t->seq);
        close(c);
        break;
    }
    case K_UDP_RECV: {
        struct sockaddr_in a = loopback(udp_rx_port);
        if (sendto(udp_tx, &t->seq, sizeof t->seq, 0, (struct sockaddr *)&a, sizeof a) !=
            (ssize_t)sizeof t->seq)
            FAIL("helper sendto: %s", strerror(errno));
        break;
    }
    case K_TCP_READ: {
        uint8_t *buf = malloc(t->len);
        fill_pattern(buf, t->len, t->from);
        helper_write_all(st_a, buf, t->len);
        free(buf);
        break;
    }
    case K_TCP_WRITE: {
        /* A slow reader: the victim's write finds the buffers full. */
        uint8_t buf[16384];
        uint64_t at = t->from, end = t->from + t->len, pause = t->seq | 1;
        while (at < end) {
            size_t want = end - at < sizeof buf ? (size_t)(end - at) : sizeof buf;
            ssize_t r = read(st_b, buf, want);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                FAIL("slow reader: %s", r == 0 ? "end of file" : strerror(errno));
            check_pattern(buf, (size_t)r, at);
            at += (uint64_t)r;
            pause ^= pause << 13;
            pause ^= pause >> 7;
            pause ^= pause << 17;
            if ((pause & 15) == 0)
                sleep_us(200);
        }
        break;
    }
    case K_UDP_SEND: {
        uint32_t got;
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        ssize_t r;
        while ((r = recvfrom(udp_rx, &got, sizeof got, 0, (struct sockaddr *)&from, &len)) < 0)
            if (errno != EINTR)
                FAIL("helper recvfrom: %s", strerror(errno));
        if (r != sizeof got || got != t->seq)
            FAIL("datagram carried %u (%zd bytes), want %u", got, r, t->seq);
        if (ntohs(from.sin_port) != udp_tx_port)
            FAIL("datagram from port %u, want %u", ntohs(from.sin_port), udp_tx_port);
        break;
    }
    }
    return NULL;
}

/* No connection, datagram or byte is left over: nothing was delivered twice. */
static void check_quiet(void) {
    struct pollfd p[3] = {{lst, POLLIN, 0}, {udp_rx, POLLIN, 0}, {st_b, POLLIN, 0}};
    int n;
    while ((n = poll(p, 3, 0)) < 0 && errno == EINTR) {
    }
    if (n != 0)
        FAIL("left over: listener %#x, udp %#x, stream %#x", p[0].revents, p[1].revents,
             p[2].revents);
}

static void victim_accept(uint32_t seq) {
    int c;
    /* With and without the peer's address (Python always asks for it). */
    int with_addr = (int)(rnd() & 1), plain = (int)(rnd() & 1);
    struct sockaddr_in peer;
    for (;;) {
        socklen_t len = sizeof peer;
        struct sockaddr *pa = with_addr ? (struct sockaddr *)&peer : NULL;
        socklen_t *pl = with_addr ? &len : NULL;
        c = plain ? accept(lst, pa, pl) : accept4(lst, pa, pl, SOCK_CLOEXEC);
        if (c >= 0)
            break;
        interrupted("accept", errno);
    }
    if (with_addr && (peer.sin_family != AF_INET || peer.sin_addr.s_addr != htonl(INADDR_LOOPBACK)))
        FAIL("accepted peer address family %d", peer.sin_family);
    uint32_t got;
    read_exact(c, &got, sizeof got, "read accepted");
    if (got != seq)
        FAIL("accepted connection carried %u, want %u", got, seq);
    close(c);
}

static void victim_connect(int c, uint32_t seq) {
    struct sockaddr_in a = loopback(lst_port);
    /* After EINTR the connect is made again: Linux then waits for the
     * attempt under way and answers 0, or EISCONN when it already ended.
     * (Waiting for writability and reading SO_ERROR instead, as Python
     * does, is not used: see the README on calls a signal interrupts
     * before the Sentry received them.) */
    while (connect(c, (struct sockaddr *)&a, sizeof a) != 0) {
        if (errno == EISCONN)
            break;
        interrupted("connect", errno);
    }
    size_t put = 0;
    while (put < sizeof seq) {
        ssize_t r = write(c, (char *)&seq + put, sizeof seq - put);
        if (r < 0) {
            interrupted("write after connect", errno);
            continue;
        }
        put += (size_t)r;
    }
    close(c);
}

static void victim_udp_recv(int how, uint32_t seq) {
    uint32_t got = 0;
    struct sockaddr_in from;
    int has_from = how != 2;
    ssize_t r;
    for (;;) {
        socklen_t len = sizeof from;
        memset(&from, 0, sizeof from);
        if (how == 0) {
            r = recvfrom(udp_rx, &got, sizeof got, 0, (struct sockaddr *)&from, &len);
        } else if (how == 1) {
            struct iovec iov = {&got, sizeof got};
            struct msghdr m = {.msg_name = &from, .msg_namelen = sizeof from,
                               .msg_iov = &iov, .msg_iovlen = 1};
            r = recvmsg(udp_rx, &m, 0);
        } else {
            r = recv(udp_rx, &got, sizeof got, 0);
        }
        if (r >= 0)
            break;
        interrupted(how == 0 ? "recvfrom" : how == 1 ? "recvmsg" : "recv", errno);
    }
    if (r != sizeof got || got != seq)
        FAIL("received %u (%zd bytes), want %u", got, r, seq);
    if (has_from && ntohs(from.sin_port) != udp_tx_port)
        FAIL("datagram from port %u, want %u", ntohs(from.sin_port), udp_tx_port);
}

static void victim_tcp_read(size_t len) {
    uint8_t *buf = malloc(len);
    size_t got = 0;
    while (got < len) {
        ssize_t r = (rnd() & 1) ? read(st_b, buf + got, len - got)
                                : recv(st_b, buf + got, len - got, 0);
        if (r < 0) {
            interrupted("stream read", errno);
            continue;
        }
        if (r == 0)
            FAIL("stream ended after %zu of %zu bytes", got, len);
        check_pattern(buf + got, (size_t)r, stream_pos + got);
        got += (size_t)r;
    }
    stream_pos += len;
    free(buf);
}

/* A retry after EINTR repeats the call that was interrupted, as programs do. */
static void victim_tcp_write(int how, size_t len) {
    uint8_t *buf = malloc(len);
    fill_pattern(buf, len, stream_pos);
    size_t put = 0;
    struct sockaddr_in peer = loopback(st_b_port);
    while (put < len) {
        ssize_t r;
        switch (how) {
        case 0:
            r = write(st_a, buf + put, len - put);
            break;
        case 1:
            r = send(st_a, buf + put, len - put, 0);
            break;
        default:
            /* A connected TCP socket ignores the address (this one traps). */
            r = sendto(st_a, buf + put, len - put, 0, (struct sockaddr *)&peer, sizeof peer);
            break;
        }
        if (r < 0) {
            interrupted("stream write", errno);
            continue;
        }
        put += (size_t)r;
    }
    stream_pos += len;
    free(buf);
}

static void victim_udp_send(uint32_t seq) {
    struct sockaddr_in a = loopback(udp_rx_port);
    for (;;) {
        ssize_t r = sendto(udp_tx, &seq, sizeof seq, 0, (struct sockaddr *)&a, sizeof a);
        if (r == (ssize_t)sizeof seq)
            return;
        if (r >= 0)
            FAIL("sendto sent %zd bytes", r);
        interrupted("sendto", errno);
    }
}

/* A connection reset by one side (SO_LINGER {1, 0}), read by the other. */
static void history_reset(void) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(lst_port);
    if (connect(c, (struct sockaddr *)&a, sizeof a) != 0)
        FAIL("reset history connect: %s", strerror(errno));
    int s;
    while ((s = accept(lst, NULL, NULL)) < 0)
        if (errno != EINTR)
            FAIL("reset history accept: %s", strerror(errno));
    struct linger l = {1, 0};
    int victim_side = (rnd() & 1) ? c : s, other = victim_side == c ? s : c;
    if (rnd() & 1)
        helper_write_all(victim_side, "unread", 6);
    setsockopt(victim_side, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(victim_side);
    char b[16];
    /* Linux reads ECONNRESET (or what was sent before); the sandbox may read
     * end of file. Either way the socket is finished with. */
    for (int i = 0; i < 4; i++) {
        ssize_t r = read(other, b, sizeof b);
        if (r <= 0 && !(r < 0 && errno == EINTR))
            break;
    }
    close(other);
}

/* A datagram exchange on fresh sockets. */
static void history_udp(void) {
    int u1 = new_udp(), u2 = new_udp();
    struct sockaddr_in a = loopback(port_of(u1));
    char b[8];
    if (sendto(u2, "hello", 5, 0, (struct sockaddr *)&a, sizeof a) != 5)
        FAIL("udp history sendto: %s", strerror(errno));
    ssize_t r;
    while ((r = recv(u1, b, sizeof b, 0)) < 0 && errno == EINTR) {
    }
    if (r != 5 || memcmp(b, "hello", 5) != 0)
        FAIL("udp history received %zd bytes", r);
    close(u1);
    close(u2);
}

/* The listener closed and replaced by a new one. */
static void history_new_listener(void) {
    close(lst);
    lst = new_listener();
    lst_port = port_of(lst);
}

/* A child that inherits every socket, uses some, and exits. */
static void history_fork(void) {
    pid_t pid = fork();
    if (pid < 0)
        FAIL("fork: %s", strerror(errno));
    if (pid == 0) {
        int u = socket(AF_INET, SOCK_DGRAM, 0);
        close(u);
        close(lst);
        close(udp_rx);
        _exit(0);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            FAIL("waitpid: %s", strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        FAIL("child status %#x", status);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SEED ITERATIONS\n", argv[0]);
        return 2;
    }
    seed = strtoull(argv[1], NULL, 0);
    int iterations = atoi(argv[2]);
    rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
    printf("seed %llu\n", (unsigned long long)seed);
    fflush(stdout);

    victim = pthread_self();
    lst = new_listener();
    udp_rx = new_udp();
    udp_tx = new_udp();
    lst_port = port_of(lst);
    udp_rx_port = port_of(udp_rx);
    udp_tx_port = port_of(udp_tx);
    {
        st_a = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = loopback(lst_port);
        if (connect(st_a, (struct sockaddr *)&a, sizeof a) != 0)
            FAIL("stream connect: %s", strerror(errno));
        while ((st_b = accept(lst, NULL, NULL)) < 0)
            if (errno != EINTR)
                FAIL("stream accept: %s", strerror(errno));
        st_b_port = port_of(st_b);
    }
    pthread_t sig_thread, dog;
    pthread_create(&sig_thread, NULL, signaller, (void *)(uintptr_t)(seed + 1));
    pthread_create(&dog, NULL, watchdog, NULL);

    long per_kind[K_COUNT] = {0};
    long conns = 0, datagrams = 0, bytes = 0;
    for (iter = 0; iter < iterations; iter++) {
        atomic_fetch_add(&progress, 1);
        kind_name = "history";
        switch (below(20)) {
        case 0: history_reset(); break;
        case 1: history_udp(); break;
        case 2: history_new_listener(); break;
        case 3: history_fork(); break;
        default: break;
        }
        int kind = (int)below(K_COUNT);
        kind_name = kind_names[kind];
        restart = (int)(rnd() & 1);
        set_handler(restart);
        struct task t = {.kind = kind, .seq = next_seq++};
        /* A third of the helpers act at once, the rest after up to 1.5 ms. */
        t.delay_us = below(3) == 0 ? 0 : below(1500);
        if (kind == K_TCP_READ) {
            t.len = 1 + below(65536);
            t.from = stream_pos;
        } else if (kind == K_TCP_WRITE) {
            t.len = 1 + below(2 << 20);
            t.from = stream_pos;
        }
        /* Calls that never block are made before signals are armed: the
         * sandbox may fail those with EINTR (see the README). */
        int conn = kind == K_CONNECT ? socket(AF_INET, SOCK_STREAM, 0) : -1;
        int how = (int)below(3);
        pthread_t h;
        pthread_create(&h, NULL, helper, &t);
        atomic_store(&armed, 1);
        switch (kind) {
        case K_ACCEPT: victim_accept(t.seq); conns++; break;
        case K_CONNECT: victim_connect(conn, t.seq); conns++; break;
        case K_UDP_RECV: victim_udp_recv(how, t.seq); datagrams++; break;
        case K_TCP_READ: victim_tcp_read(t.len); bytes += (long)t.len; break;
        case K_TCP_WRITE: victim_tcp_write(how, t.len); bytes += (long)t.len; break;
        case K_UDP_SEND: victim_udp_send(t.seq); datagrams++; break;
        }
        atomic_store(&armed, 0);
        /* No signal is in flight past here: one sent is taken at the next
         * return from the kernel (getppid does not trap). */
        while (atomic_load(&sending)) {
        }
        getppid();
        pthread_join(h, NULL);
        per_kind[kind]++;
        check_quiet();
    }
    atomic_store(&quit, 1);
    pthread_join(sig_thread, NULL);
    printf("calls:");
    for (int k = 0; k < K_COUNT; k++)
        printf(" %s=%ld", kind_names[k], per_kind[k]);
    printf("\nsignals sent %ld, handled %ld, EINTR seen %ld\n", atomic_load(&signals_sent),
           atomic_load(&handled), eintr_seen);
    printf("signal stress ok: %d iterations, %ld connections, %ld datagrams, %ld stream bytes\n",
           iterations, conns, datagrams, bytes);
    return 0;
}
