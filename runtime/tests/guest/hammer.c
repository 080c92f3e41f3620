// Random-argument hammer for every call the guest's filter traps: socket
// bind connect listen accept accept4 getsockname getpeername getsockopt
// setsockopt shutdown sendto/recvfrom (with an address) sendmsg recvmsg
// sendmmsg recvmmsg and SIOC* ioctls, with random descriptors (real sockets
// of every kind among them), random lengths, flags and bad pointers.
// Nothing may block (every socket is non-blocking and every receive has
// MSG_DONTWAIT); a watchdog alarm reports a stall. Afterwards a fresh TCP
// connection and a UDP round trip over loopback must still work.
//
// Usage: hammer [SEED [ITERATIONS [SKIP,...]]]. SKIP names calls to leave
// out (triage: e.g. "shutdown,ioctl"). Prints the seed, a summary of the
// errnos seen per call, and "final echo ok".

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define DATA_SIZE (256 * 1024)
#define POOL_MAX 32

static uint64_t rng;
static volatile long iteration;
static const char *volatile what = "setup";
static char last_call[400];
static const char *pool_kind[1024];

static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static uint64_t below(uint64_t n) {
    return n ? next() % n : 0;
}

static void on_alarm(int sig) {
    (void)sig;
    char buf[512];
    int n = snprintf(buf, sizeof buf, "STALLED at iteration %ld in %s\n", iteration, last_call[0] ? last_call : what);
    write(1, buf, n);
    _exit(3);
}

// A crash of the hammer itself after a call means that call corrupted its
// memory (natively the kernel never writes where it was not asked to).
static void on_crash(int sig, siginfo_t *si, void *ctx) {
    (void)ctx;
    char buf[600];
    int n = snprintf(buf, sizeof buf, "CRASHED with signal %d (fault address %p) at iteration %ld after %s\n", sig,
                     si->si_addr, iteration, last_call);
    write(1, buf, n);
    _exit(4);
}

// Memory the kernel may write into: a data region followed by a PROT_NONE
// guard. Control structures (msghdr, iovec) live apart, in `ctl`.
static char *data;
static char *readonly;
static char *protnone;
static char *ctl;

static int pool[POOL_MAX];
static int npool;
static int max_pool_fd;
static int listen_port;

// Whether [p, p+n) lies inside the data region (so the hammer may write it).
static int in_data(const void *p, size_t n) {
    uintptr_t a = (uintptr_t)p, lo = (uintptr_t)data;
    return a >= lo && a <= lo + DATA_SIZE - n;
}

static void *rand_ptr(void) {
    switch (below(12)) {
    case 0:
        return NULL;
    case 1:
        return (void *)1;
    case 2:
        return (void *)0x1000;
    case 3:
        return (void *)0xffff888000000000UL;
    case 4:
        return (void *)-1L;
    case 5:
        return protnone;
    case 6:
        return readonly;
    case 7:
        return data + DATA_SIZE - 1 - below(64); // runs into the guard page
    default:
        return data + below(DATA_SIZE);
    }
}

static uint64_t rand_len(void) {
    static const uint64_t common[] = {0, 1, 2, 4, 8, 12, 15, 16, 24, 28, 32, 64, 110, 112, 128, 129, 4096,
                                      65507, 65536, 0x7fffffff, 0x80000000, 0xffffffff, 0xffffffffffffffffUL};
    if (below(3) == 0)
        return next();
    if (below(2) == 0)
        return below(300);
    return common[below(sizeof common / sizeof common[0])];
}

static int rand_fd(void) {
    switch (below(12)) {
    case 0:
        return (int)below(48);
    case 1:
        return -1;
    case 2:
        return below(2) ? 9999 : (int)next();
    default:
        return pool[below(npool)];
    }
}

static int rand_flags(void) {
    static const int bits[] = {MSG_OOB, MSG_PEEK, MSG_DONTROUTE, MSG_TRUNC, MSG_WAITALL, MSG_ERRQUEUE,
                               MSG_NOSIGNAL, MSG_MORE, MSG_CMSG_CLOEXEC, MSG_CONFIRM, MSG_EOR, MSG_FASTOPEN,
                               MSG_WAITFORONE, MSG_ZEROCOPY};
    int f = 0;
    if (below(4) == 0)
        f = (int)next();
    else
        for (int i = 0, n = (int)below(4); i < n; i++)
            f |= bits[below(sizeof bits / sizeof bits[0])];
    return f | MSG_DONTWAIT;
}

// A plausible socket address (often valid for loopback) written into data.
static void *rand_addr(socklen_t *len) {
    char *p = data + below(DATA_SIZE - 256);
    for (int i = 0; i < 128; i++)
        p[i] = (char)next();
    switch (below(6)) {
    case 0: {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(below(3) ? listen_port : below(65536))};
        a.sin_addr.s_addr = below(2) ? htonl(INADDR_LOOPBACK) : (uint32_t)next();
        memcpy(p, &a, sizeof a);
        *len = below(4) ? sizeof a : (socklen_t)rand_len();
        return p;
    }
    case 1: {
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(below(2) ? listen_port : below(65536))};
        a.sin6_addr = in6addr_loopback;
        if (below(3) == 0)
            a.sin6_scope_id = (uint32_t)next();
        memcpy(p, &a, sizeof a);
        *len = below(4) ? sizeof a : (socklen_t)rand_len();
        return p;
    }
    case 2: {
        unsigned short fam = (unsigned short)below(48);
        memcpy(p, &fam, 2);
        *len = (socklen_t)rand_len();
        return p;
    }
    case 3: {
        struct sockaddr_nl a = {.nl_family = AF_NETLINK, .nl_pid = (uint32_t)below(3), .nl_groups = (uint32_t)next()};
        memcpy(p, &a, sizeof a);
        *len = sizeof a;
        return p;
    }
    default:
        *len = (socklen_t)rand_len();
        return rand_ptr();
    }
}

static struct msghdr *rand_msghdr(struct msghdr *m) {
    memset(m, 0, sizeof *m);
    socklen_t alen;
    m->msg_name = below(3) ? rand_addr(&alen) : NULL;
    m->msg_namelen = below(2) ? alen : (socklen_t)rand_len();
    size_t n = below(8) == 0 ? (size_t)rand_len() : below(5);
    struct iovec *iov = (struct iovec *)(ctl + 4096 + below(64) * sizeof(struct iovec));
    for (size_t i = 0; i < 8; i++) {
        iov[i].iov_base = rand_ptr();
        iov[i].iov_len = below(3) ? below(2048) : rand_len();
    }
    m->msg_iov = below(10) ? iov : rand_ptr();
    m->msg_iovlen = n;
    if (below(3) == 0) {
        char *c = data + below(DATA_SIZE - 512);
        for (int i = 0; i < 64; i++)
            c[i] = (char)next();
        if (below(2)) {
            struct cmsghdr *h = (struct cmsghdr *)c;
            h->cmsg_len = below(2) ? CMSG_LEN(sizeof(int) * below(4)) : rand_len();
            h->cmsg_level = below(2) ? SOL_SOCKET : (below(2) ? IPPROTO_IP : (int)next());
            h->cmsg_type = (int)below(40);
        }
        m->msg_control = below(6) ? c : rand_ptr();
        m->msg_controllen = below(2) ? below(128) : rand_len();
    }
    m->msg_flags = (int)next();
    return m;
}

static long counts[20][8];
enum { E_OK, E_FAULT, E_BADF, E_NOTSOCK, E_INVAL, E_AGAIN, E_OTHER };

static void note(int call, long r) {
    int k;
    if (r >= 0)
        k = E_OK;
    else if (errno == EFAULT)
        k = E_FAULT;
    else if (errno == EBADF)
        k = E_BADF;
    else if (errno == ENOTSOCK)
        k = E_NOTSOCK;
    else if (errno == EINVAL)
        k = E_INVAL;
    else if (errno == EAGAIN || errno == EINPROGRESS)
        k = E_AGAIN;
    else
        k = E_OTHER;
    counts[call][k]++;
}

static const char *names[] = {"socket",    "bind",       "connect",    "listen",      "accept",
                              "accept4",   "getsockname", "getpeername", "getsockopt", "setsockopt",
                              "shutdown",  "sendto",     "recvfrom",   "sendmsg",     "recvmsg",
                              "sendmmsg",  "recvmmsg",   "ioctl"};

static int nb(int fd) {
    if (fd >= 0)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static int add_kind(int fd, const char *kind) {
    if (fd >= 0 && fd < 1024)
        pool_kind[fd] = kind;
    if (fd >= 0 && npool < POOL_MAX) {
        pool[npool++] = nb(fd);
        if (fd > max_pool_fd)
            max_pool_fd = fd;
    }
    return fd;
}

static void make_pool(void) {
    npool = 0;
    max_pool_fd = 2;
    snprintf(last_call, sizeof last_call, "pool rebuild: socket/bind/listen");
    int l = add_kind(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), "tcp listener");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(l, (struct sockaddr *)&a, sizeof a);
    listen(l, 64);
    socklen_t len = sizeof a;
    getsockname(l, (struct sockaddr *)&a, &len);
    listen_port = ntohs(a.sin_port);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    snprintf(last_call, sizeof last_call, "pool rebuild: blocking connect to the pool listener");
    connect(c, (struct sockaddr *)&a, sizeof a);
    add_kind(c, "tcp connected client");
    struct pollfd p = {.fd = l, .events = POLLIN};
    snprintf(last_call, sizeof last_call, "pool rebuild: poll + accept on the pool listener");
    poll(&p, 1, 2000);
    add_kind(accept(l, NULL, NULL), "tcp accepted");
    snprintf(last_call, sizeof last_call, "pool rebuild: more sockets");
    add_kind(socket(AF_INET, SOCK_STREAM, 0), "tcp fresh");
    add_kind(socket(AF_INET6, SOCK_STREAM, 0), "tcp6 fresh");
    int u = add_kind(socket(AF_INET, SOCK_DGRAM, 0), "udp bound");
    bind(u, (struct sockaddr *)&a, sizeof a);
    add_kind(socket(AF_INET, SOCK_DGRAM, 0), "udp fresh");
    add_kind(socket(AF_INET6, SOCK_DGRAM, 0), "udp6 fresh");
    add_kind(socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE), "netlink route");
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    add_kind(sv[0], "unix stream");
    add_kind(sv[1], "unix stream");
    socketpair(AF_UNIX, SOCK_DGRAM, 0, sv);
    add_kind(sv[0], "unix dgram");
    add_kind(sv[1], "unix dgram");
    add_kind(open("/proc/self/exe", O_RDONLY), "regular file");
    add_kind(open("/dev/null", O_RDWR), "/dev/null");
    int pp[2];
    pipe(pp);
    add_kind(pp[0], "pipe");
    add_kind(pp[1], "pipe");
}

static void drop_pool(void) {
    for (int i = 0; i < npool; i++) {
        close(pool[i]);
        if (pool[i] < 1024)
            pool_kind[pool[i]] = NULL;
    }
    npool = 0;
}

// Closes every descriptor the hammer made by accident (accept, socket,
// SCM_RIGHTS) so the table never fills up.
static void sweep(void) {
    for (int fd = max_pool_fd + 1; fd < 1024; fd++)
        close(fd);
}


// Records the call (for the watchdog's report) and makes it.
static long sc(long nr, long a, long b, long c, long d, long e, long f) {
    const char *kind = a >= 0 && a < 1024 && pool_kind[a] ? pool_kind[a] : "not in pool";
    snprintf(last_call, sizeof last_call, "%s(%#lx, %#lx, %#lx, %#lx, %#lx, %#lx) [fd: %s]", what, a, b, c, d, e, f,
             kind);
    return syscall(nr, a, b, c, d, e, f);
}

static int skipped[18];

static void one_call(void) {
    int call = (int)below(18);
    if (skipped[call])
        return;
    what = names[call];
    long r = -1;
    socklen_t alen;
    void *addr;
    int fd = rand_fd();
    switch (call) {
    case 0: {
        static const int fams[] = {AF_INET, AF_INET6, AF_NETLINK};
        int fam = below(4) ? fams[below(3)] : (int)next();
        if (fam != AF_INET && fam != AF_INET6 && fam != AF_NETLINK)
            fam = AF_INET; // other families are the filter's business, not the Sentry's
        int type = below(3) ? (int)below(6) | (below(2) ? SOCK_NONBLOCK : 0) : (int)next();
        int proto = below(2) ? 0 : (below(2) ? (int)below(300) : (int)next());
        r = sc(SYS_socket, (long)(fam), (long)(type | SOCK_NONBLOCK), (long)(proto), 0, 0, 0);
        break;
    }
    case 1:
        addr = rand_addr(&alen);
        r = sc(SYS_bind, (long)(fd), (long)(addr), (long)(alen), 0, 0, 0);
        break;
    case 2:
        addr = rand_addr(&alen);
        r = sc(SYS_connect, (long)(fd), (long)(addr), (long)(alen), 0, 0, 0);
        break;
    case 3:
        r = sc(SYS_listen, (long)(fd), (long)(below(2) ? (int)below(200) : (int)next()), 0, 0, 0, 0);
        break;
    case 4:
    case 5: {
        void *p = below(3) ? data + below(DATA_SIZE - 128) : rand_ptr();
        socklen_t *lp = below(4) ? (socklen_t *)(data + below(DATA_SIZE - 8)) : rand_ptr();
        if (below(2) && in_data(lp, sizeof *lp))
            *lp = (socklen_t)rand_len();
        int flags = below(2) ? (int)(below(2) ? SOCK_NONBLOCK : SOCK_CLOEXEC) : (int)next();
        r = call == 4 ? sc(SYS_accept, (long)(fd), (long)(p), (long)(lp), 0, 0, 0) : sc(SYS_accept4, (long)(fd), (long)(p), (long)(lp), (long)(flags), 0, 0);
        break;
    }
    case 6:
    case 7: {
        void *p = rand_ptr();
        socklen_t *lp = below(4) ? (socklen_t *)(data + below(DATA_SIZE - 8)) : rand_ptr();
        if (below(2) && in_data(lp, sizeof *lp))
            *lp = (socklen_t)rand_len();
        r = sc(call == 6 ? SYS_getsockname : SYS_getpeername, (long)(fd), (long)(p), (long)(lp), 0, 0, 0);
        break;
    }
    case 8:
    case 9: {
        static const int levels[] = {SOL_SOCKET, IPPROTO_TCP, IPPROTO_IP, IPPROTO_IPV6, IPPROTO_UDP, SOL_NETLINK};
        int level = below(5) ? levels[below(6)] : (int)next();
        int name = below(5) ? (int)below(80) : (int)next();
        void *val = rand_ptr();
        if (call == 8) {
            socklen_t *lp = below(4) ? (socklen_t *)(data + below(DATA_SIZE - 8)) : rand_ptr();
            if (in_data(lp, sizeof *lp))
                *lp = below(2) ? (socklen_t)below(300) : (socklen_t)rand_len();
            r = sc(SYS_getsockopt, (long)(fd), (long)(level), (long)(name), (long)(val), (long)(lp), 0);
        } else {
            // Options that would make a pool socket block or vanish are the
            // only ones left out: SO_RCVTIMEO and friends only matter to
            // blocking sockets, and every receive here has MSG_DONTWAIT.
            r = sc(SYS_setsockopt, (long)(fd), (long)(level), (long)(name), (long)(val), (long)((socklen_t)rand_len()), 0);
        }
        break;
    }
    case 10:
        r = sc(SYS_shutdown, (long)(fd), (long)(below(4) ? (int)below(4) : (int)next()), 0, 0, 0, 0);
        break;
    case 11:
    case 12: {
        addr = rand_addr(&alen);
        if (addr == NULL)
            addr = (void *)1; // NULL does not trap: keep the address non-NULL
        void *buf = rand_ptr();
        size_t len = below(3) ? below(70000) : rand_len();
        if (call == 11) {
            r = sc(SYS_sendto, (long)(fd), (long)(buf), (long)(len), (long)(rand_flags() | MSG_NOSIGNAL), (long)(addr), (long)(alen));
        } else {
            socklen_t *lp = below(4) ? (socklen_t *)(data + below(DATA_SIZE - 8)) : rand_ptr();
            if (lp == NULL)
                lp = (socklen_t *)1;
            if (in_data(lp, sizeof *lp))
                *lp = (socklen_t)rand_len();
            r = sc(SYS_recvfrom, (long)(fd), (long)(buf), (long)(len), (long)(rand_flags()), (long)(addr), (long)(lp));
        }
        break;
    }
    case 13:
    case 14: {
        struct msghdr *m = (struct msghdr *)(ctl + below(32) * sizeof(struct msghdr));
        void *mp = below(10) ? (void *)rand_msghdr(m) : rand_ptr();
        r = sc(call == 13 ? SYS_sendmsg : SYS_recvmsg, (long)(fd), (long)(mp), (long)(rand_flags() | (call == 13 ? MSG_NOSIGNAL : 0)), 0, 0, 0);
        break;
    }
    case 15:
    case 16: {
        struct mmsghdr *mm = (struct mmsghdr *)(ctl + 16384);
        for (int i = 0; i < 8; i++) {
            rand_msghdr(&mm[i].msg_hdr);
            mm[i].msg_len = (unsigned)next();
        }
        void *vec = below(8) ? (void *)mm : rand_ptr();
        unsigned vlen = below(4) ? (unsigned)below(9) : (unsigned)next();
        if (vec == (void *)mm && vlen > 8)
            vlen = 8 + (unsigned)below(2); // the ninth entry lies past the array: random bytes, still ours
        if (call == 15) {
            r = sc(SYS_sendmmsg, (long)(fd), (long)(vec), (long)(vlen), (long)(rand_flags() | MSG_NOSIGNAL), 0, 0);
        } else {
            struct timespec *ts = (struct timespec *)(ctl + 32768);
            ts->tv_sec = 0;
            ts->tv_nsec = below(3) ? 0 : (long)next();
            void *tp = below(3) ? NULL : (below(2) ? (void *)ts : rand_ptr());
            r = sc(SYS_recvmmsg, (long)(fd), (long)(vec), (long)(vlen), (long)(rand_flags()), (long)(tp), 0);
        }
        break;
    }
    case 17: {
        // Reads of interface state get a real name often; everything else
        // gets random bytes (so a set-command never names a real device).
        static const unsigned long gets[] = {0x8910, 0x8912, 0x8913, 0x8915, 0x8917, 0x8919, 0x891b,
                                             0x8921, 0x8927, 0x8933, 0x8905, 0x8906, 0x8907};
        unsigned long cmd = below(2) ? gets[below(sizeof gets / sizeof gets[0])] : 0x8900 + below(256);
        if (cmd >= 0x89a0 && cmd <= 0x89a2)
            cmd = 0x8913; // bridge add/delete would create devices natively
        void *arg = rand_ptr();
        if (below(2) && in_data(arg, 64)) {
            int is_get = 0;
            for (size_t i = 0; i < sizeof gets / sizeof gets[0]; i++)
                is_get |= gets[i] == cmd;
            if (is_get) {
                memset(arg, 0, 40);
                strcpy(arg, below(4) ? "lo" : "nosuch0");
                if (cmd == 0x8912) { // SIOCGIFCONF: struct ifconf {len, ptr}
                    struct ifconf *ifc = arg;
                    ifc->ifc_len = (int)(below(2) ? below(200) : rand_len());
                    ifc->ifc_buf = rand_ptr();
                }
                if (cmd == 0x8910) // SIOCGIFNAME: by index
                    ((struct ifreq *)arg)->ifr_ifindex = (int)below(4);
            }
        }
        r = sc(SYS_ioctl, (long)(fd), (long)(cmd), (long)(arg), 0, 0, 0);
        break;
    }
    }
    note(call, r);
    // New descriptors (sockets, accepted connections) are closed at once.
    if (r >= 0 && (call == 0 || call == 4 || call == 5)) {
        int is_pool = 0;
        for (int i = 0; i < npool; i++)
            is_pool |= pool[i] == r;
        if (!is_pool && r > max_pool_fd)
            close((int)r);
    }
}

static int final_echo(void) {
    what = "final echo";
    alarm(20);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4) < 0) {
        printf("final echo: bind/listen failed: %s\n", strerrorname_np(errno));
        return 1;
    }
    socklen_t len = sizeof a;
    getsockname(l, (struct sockaddr *)&a, &len);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&a, sizeof a) < 0) {
        printf("final echo: connect failed: %s\n", strerrorname_np(errno));
        return 1;
    }
    int s = accept(l, NULL, NULL);
    if (s < 0) {
        printf("final echo: accept failed: %s\n", strerrorname_np(errno));
        return 1;
    }
    char out[8192], in[8192], back[8192];
    for (size_t i = 0; i < sizeof out; i++)
        out[i] = (char)(i * 31 + 7);
    size_t got = 0;
    if (write(c, out, sizeof out) != (ssize_t)sizeof out) {
        printf("final echo: write failed\n");
        return 1;
    }
    while (got < sizeof in) {
        ssize_t n = read(s, in + got, sizeof in - got);
        if (n <= 0) {
            printf("final echo: server read %zd after %zu bytes\n", n, got);
            return 1;
        }
        got += (size_t)n;
    }
    write(s, in, got);
    got = 0;
    while (got < sizeof back) {
        ssize_t n = read(c, back + got, sizeof back - got);
        if (n <= 0) {
            printf("final echo: client read %zd after %zu bytes\n", n, got);
            return 1;
        }
        got += (size_t)n;
    }
    if (memcmp(out, back, sizeof out) != 0) {
        printf("final echo: data differs\n");
        return 1;
    }
    close(c);
    close(s);
    close(l);

    int u1 = socket(AF_INET, SOCK_DGRAM, 0), u2 = socket(AF_INET, SOCK_DGRAM, 0);
    a.sin_port = 0;
    bind(u1, (struct sockaddr *)&a, sizeof a);
    len = sizeof a;
    getsockname(u1, (struct sockaddr *)&a, &len);
    if (sendto(u2, "datagram", 8, 0, (struct sockaddr *)&a, sizeof a) != 8) {
        printf("final echo: udp sendto failed: %s\n", strerrorname_np(errno));
        return 1;
    }
    char dg[16] = {0};
    struct sockaddr_in from;
    len = sizeof from;
    if (recvfrom(u1, dg, sizeof dg, 0, (struct sockaddr *)&from, &len) != 8 || memcmp(dg, "datagram", 8) != 0) {
        printf("final echo: udp recvfrom failed\n");
        return 1;
    }
    printf("final echo ok\n");
    return 0;
}

int main(int argc, char **argv) {
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    long iterations = argc > 2 ? atol(argv[2]) : 20000;
    rng = seed ? seed : 1;
    if (argc > 3)
        for (int c = 0; c < 18; c++)
            skipped[c] = strstr(argv[3], names[c]) != NULL;
    printf("seed %#llx iterations %ld\n", (unsigned long long)seed, iterations);
    fflush(stdout);
    signal(SIGALRM, on_alarm);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_sigaction = on_crash, .sa_flags = SA_SIGINFO};
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);

    data = mmap(NULL, DATA_SIZE + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(data + DATA_SIZE, 4096, PROT_NONE);
    protnone = data + DATA_SIZE;
    readonly = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ctl = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < DATA_SIZE; i += 8) {
        uint64_t v = next();
        memcpy(data + i, &v, 8);
    }

    make_pool();
    for (iteration = 0; iteration < iterations; iteration++) {
        if (iteration % 100 == 0)
            alarm(10);
        if (iteration % 500 == 499) {
            drop_pool();
            sweep();
            make_pool();
        }
        one_call();
    }
    drop_pool();
    sweep();
    alarm(0);

    for (int c = 0; c < 18; c++)
        printf("%-12s ok=%ld EFAULT=%ld EBADF=%ld ENOTSOCK=%ld EINVAL=%ld EAGAIN=%ld other=%ld\n", names[c],
               counts[c][E_OK], counts[c][E_FAULT], counts[c][E_BADF], counts[c][E_NOTSOCK], counts[c][E_INVAL],
               counts[c][E_AGAIN], counts[c][E_OTHER]);
    fflush(stdout);
    return final_echo();
}
