// Differential probe: socket calls with good and bad arguments, one output
// line per case, "<case>: <result>". Its output natively (in a fresh network
// namespace with lo up) is the reference; under the sandbox it must be
// identical. Only deterministic facts are printed: never fd numbers or
// ephemeral ports (those become "fd" and "match"/"nonzero").
//
// Results: "<n>" for a non-negative return, "fd" for a new descriptor,
// "-1 EXXX" for a failure; extra facts follow after " | ".

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *current = "start";
static void *BAD1 = (void *)1;
static void *KERNEL = (void *)0xffff888000000000UL;
static void *UNMAPPED = (void *)0x1000; // below mmap_min_addr: never mapped
static void *PROTNONE;
static char *STRADDLE; // 8 readable bytes, then a PROT_NONE page
static void *READONLY;
static int file_fd;

static const char *en(int e) {
    const char *s = strerrorname_np(e);
    return s ? s : "E?";
}

static void on_alarm(int sig) {
    (void)sig;
    char buf[256];
    int n = snprintf(buf, sizeof buf, "STALLED in case %s\n", current);
    write(1, buf, n);
    _exit(3);
}

// Prints one case's result and returns it.
static long rep(const char *name, long r, int e, int is_fd, const char *fmt, ...) {
    current = name;
    alarm(10); // per case: a stall names the case after this one
    printf("%s: ", name);
    if (r < 0)
        printf("-1 %s", en(e));
    else if (is_fd)
        printf("fd");
    else
        printf("%ld", r);
    if (fmt && *fmt) {
        va_list ap;
        va_start(ap, fmt);
        printf(" | ");
        vprintf(fmt, ap);
        va_end(ap);
    }
    printf("\n");
    fflush(stdout);
    return r;
}

#define R(name, call)                                                          \
    ({                                                                         \
        current = name;                                                        \
        errno = 0;                                                             \
        long r_ = (long)(call);                                                \
        rep(name, r_, errno, 0, NULL);                                         \
    })
#define RFD(name, call)                                                        \
    ({                                                                         \
        current = name;                                                        \
        errno = 0;                                                             \
        long r_ = (long)(call);                                                \
        rep(name, r_, errno, 1, NULL);                                         \
    })
// A result with extra facts (printf-style, evaluated after the call).
#define RX(name, call, ...)                                                    \
    ({                                                                         \
        current = name;                                                        \
        errno = 0;                                                             \
        long r_ = (long)(call);                                                \
        int e_ = errno;                                                        \
        rep(name, r_, e_, 0, __VA_ARGS__);                                     \
    })

static void fact(const char *name, const char *fmt, ...) {
    current = name;
    va_list ap;
    va_start(ap, fmt);
    printf("%s: ", name);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

static struct sockaddr_in a4(const char *ip, int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static struct sockaddr_in6 a6(const char *ip, int port) {
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
    inet_pton(AF_INET6, ip, &a.sin6_addr);
    return a;
}

static int port_of(int fd) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

static int listener4(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = a4("127.0.0.1", 0);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0) {
        perror("listener4");
        exit(2);
    }
    return fd;
}

static int closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = a4("127.0.0.1", 0);
    bind(fd, (struct sockaddr *)&a, sizeof a);
    int p = port_of(fd);
    close(fd);
    return p;
}

static int connect4(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = a4("127.0.0.1", port);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("connect4");
        exit(2);
    }
    return fd;
}

// A connected TCP pair over 127.0.0.1: *c the client, *s the accepted end.
static void tcp_pair(int *c, int *s) {
    int l = listener4();
    *c = connect4(port_of(l));
    *s = accept(l, NULL, NULL);
    if (*s < 0) {
        perror("tcp_pair accept");
        exit(2);
    }
    close(l);
}

static int udp4_bound(void) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = a4("127.0.0.1", 0);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("udp4_bound");
        exit(2);
    }
    return fd;
}

static int readable(int fd, int ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms);
}

static int geti(int fd, int level, int opt) {
    int v = -12345;
    socklen_t len = sizeof v;
    if (getsockopt(fd, level, opt, &v, &len) < 0)
        return -errno;
    return v;
}

static int seti(int fd, int level, int opt, int v) {
    return setsockopt(fd, level, opt, &v, sizeof v);
}

static const char *addr_str(struct sockaddr_storage *ss, char *buf, size_t n) {
    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)ss)->sin_addr, buf, n);
    else if (ss->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ss)->sin6_addr, buf, n);
    else
        snprintf(buf, n, "family%d", ss->ss_family);
    return buf;
}

static void section_socket(void) {
    int fd;
    fd = RFD("socket inet stream", socket(AF_INET, SOCK_STREAM, 0));
    close(fd);
    fd = RFD("socket inet dgram", socket(AF_INET, SOCK_DGRAM, 0));
    close(fd);
    fd = RFD("socket inet6 stream", socket(AF_INET6, SOCK_STREAM, 0));
    close(fd);
    fd = RFD("socket inet6 dgram", socket(AF_INET6, SOCK_DGRAM, 0));
    close(fd);
    fd = RFD("socket inet stream IPPROTO_TCP", socket(AF_INET, SOCK_STREAM, IPPROTO_TCP));
    close(fd);
    fd = RFD("socket inet dgram IPPROTO_UDP", socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP));
    close(fd);
    R("socket inet stream IPPROTO_UDP", socket(AF_INET, SOCK_STREAM, IPPROTO_UDP));
    R("socket inet dgram IPPROTO_TCP", socket(AF_INET, SOCK_DGRAM, IPPROTO_TCP));
    R("socket inet stream proto 200", socket(AF_INET, SOCK_STREAM, 200));
    R("socket inet type 99", socket(AF_INET, 99, 0));
    R("socket inet seqpacket", socket(AF_INET, SOCK_SEQPACKET, 0));
    R("socket inet6 seqpacket", socket(AF_INET6, SOCK_SEQPACKET, 0));
    R("socket inet stream bad flag bit", socket(AF_INET, SOCK_STREAM | 0x40000000, 0));
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    fact("socket NONBLOCK|CLOEXEC flags", "nonblock=%d cloexec=%d",
         !!(fcntl(fd, F_GETFL) & O_NONBLOCK), !!(fcntl(fd, F_GETFD) & FD_CLOEXEC));
    close(fd);
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    fact("socket plain flags", "nonblock=%d cloexec=%d", !!(fcntl(fd, F_GETFL) & O_NONBLOCK),
         !!(fcntl(fd, F_GETFD) & FD_CLOEXEC));
    close(fd);
    fd = RFD("socket netlink route raw", socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE));
    close(fd);
    fd = RFD("socket netlink route dgram", socket(AF_NETLINK, SOCK_DGRAM, NETLINK_ROUTE));
    close(fd);
    fd = RFD("socketpair unix stream still native", socket(AF_UNIX, SOCK_STREAM, 0));
    close(fd);
}

static void section_bind(void) {
    struct sockaddr_in a = a4("127.0.0.1", 0);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    R("bind bad fd", bind(9999, (struct sockaddr *)&a, sizeof a));
    R("bind fd -1", bind(-1, (struct sockaddr *)&a, sizeof a));
    R("bind regular file", bind(file_fd, (struct sockaddr *)&a, sizeof a));
    R("bind NULL addr", bind(s, NULL, sizeof a));
    R("bind addr 0x1", bind(s, BAD1, sizeof a));
    R("bind unmapped addr", bind(s, UNMAPPED, sizeof a));
    R("bind kernel addr", bind(s, KERNEL, sizeof a));
    R("bind PROT_NONE addr", bind(s, PROTNONE, sizeof a));
    R("bind addr straddling into PROT_NONE", bind(s, (struct sockaddr *)STRADDLE, sizeof a));
    R("bind len 0", bind(s, (struct sockaddr *)&a, 0));
    R("bind len 8", bind(s, (struct sockaddr *)&a, 8));
    R("bind len 129", bind(s, (struct sockaddr *)&a, 129));
    R("bind len 0xffffffff", bind(s, (struct sockaddr *)&a, (socklen_t)-1));
    struct sockaddr_in6 six = a6("::1", 0);
    R("bind v4 socket with AF_INET6 addr", bind(s, (struct sockaddr *)&six, sizeof six));
    struct sockaddr_in un = a4("127.0.0.1", 0);
    un.sin_family = AF_UNSPEC;
    R("bind v4 AF_UNSPEC 127.0.0.1", bind(s, (struct sockaddr *)&un, sizeof un));
    close(s);
    // Fresh sockets from here: a bad-input case that wrongly succeeded
    // above must not change the answers below.
    s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in far = a4("10.1.2.3", 0);
    R("bind 10.1.2.3", bind(s, (struct sockaddr *)&far, sizeof far));
    close(s);
    s = socket(AF_INET, SOCK_STREAM, 0);
    R("bind 127.0.0.1:0", bind(s, (struct sockaddr *)&a, sizeof a));
    fact("bind 127.0.0.1:0 port", "%s", port_of(s) > 0 ? "nonzero" : "zero");
    R("bind twice", bind(s, (struct sockaddr *)&a, sizeof a));
    struct sockaddr_in same = a4("127.0.0.1", port_of(s));
    int s2 = socket(AF_INET, SOCK_STREAM, 0);
    R("bind port in use", bind(s2, (struct sockaddr *)&same, sizeof same));
    close(s2);
    close(s);

    s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in any = a4("0.0.0.0", 0);
    any.sin_family = AF_UNSPEC;
    R("bind v4 AF_UNSPEC INADDR_ANY", bind(s, (struct sockaddr *)&any, sizeof any));
    close(s);

    s = socket(AF_INET, SOCK_STREAM, 0);
    seti(s, SOL_SOCKET, SO_REUSEADDR, 1);
    bind(s, (struct sockaddr *)&a, sizeof a);
    same = a4("127.0.0.1", port_of(s));
    s2 = socket(AF_INET, SOCK_STREAM, 0);
    seti(s2, SOL_SOCKET, SO_REUSEADDR, 1);
    R("bind both REUSEADDR, first not listening", bind(s2, (struct sockaddr *)&same, sizeof same));
    close(s2);
    listen(s, 1);
    s2 = socket(AF_INET, SOCK_STREAM, 0);
    seti(s2, SOL_SOCKET, SO_REUSEADDR, 1);
    R("bind both REUSEADDR, first listening", bind(s2, (struct sockaddr *)&same, sizeof same));
    close(s2);
    s2 = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in anyport = a4("0.0.0.0", ntohs(same.sin_port));
    R("bind 0.0.0.0 on port of a 127.0.0.1 listener", bind(s2, (struct sockaddr *)&anyport, sizeof anyport));
    close(s2);
    close(s);

    s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in two = a4("127.0.0.2", 0);
    R("bind 127.0.0.2", bind(s, (struct sockaddr *)&two, sizeof two));
    close(s);
    s = socket(AF_INET, SOCK_STREAM, 0);
    R("bind 0.0.0.0:0", bind(s, (struct sockaddr *)&any, sizeof any));
    close(s);

    int u = udp4_bound();
    same = a4("127.0.0.1", port_of(u));
    int u2 = socket(AF_INET, SOCK_DGRAM, 0);
    R("bind udp port in use", bind(u2, (struct sockaddr *)&same, sizeof same));
    close(u2);
    close(u);
    u = socket(AF_INET, SOCK_DGRAM, 0);
    seti(u, SOL_SOCKET, SO_REUSEADDR, 1);
    bind(u, (struct sockaddr *)&a, sizeof a);
    same = a4("127.0.0.1", port_of(u));
    u2 = socket(AF_INET, SOCK_DGRAM, 0);
    seti(u2, SOL_SOCKET, SO_REUSEADDR, 1);
    R("bind udp both REUSEADDR", bind(u2, (struct sockaddr *)&same, sizeof same));
    close(u2);
    close(u);

    int v6 = socket(AF_INET6, SOCK_STREAM, 0);
    R("bind v6 len 16", bind(v6, (struct sockaddr *)&six, 16));
    struct sockaddr_in6 wrong = six;
    wrong.sin6_family = AF_INET;
    R("bind v6 socket family AF_INET len 28", bind(v6, (struct sockaddr *)&wrong, sizeof wrong));
    struct sockaddr_in6 ll = a6("fe80::1", 0);
    R("bind v6 fe80::1 without scope", bind(v6, (struct sockaddr *)&ll, sizeof ll));
    struct sockaddr_in6 doc = a6("2001:db8::1", 0);
    R("bind v6 2001:db8::1", bind(v6, (struct sockaddr *)&doc, sizeof doc));
    struct sockaddr_in6 mapped = a6("::ffff:127.0.0.1", 0);
    seti(v6, IPPROTO_IPV6, IPV6_V6ONLY, 1);
    R("bind v6only ::ffff:127.0.0.1", bind(v6, (struct sockaddr *)&mapped, sizeof mapped));
    R("bind v6 ::1 len 24", bind(v6, (struct sockaddr *)&six, 24));
    char buf[64];
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(v6, (struct sockaddr *)&ss, &len);
    fact("bind v6 ::1 getsockname", "len=%u addr=%s", len, addr_str(&ss, buf, sizeof buf));
    close(v6);
    v6 = socket(AF_INET6, SOCK_STREAM, 0);
    seti(v6, IPPROTO_IPV6, IPV6_V6ONLY, 0);
    R("bind dual ::ffff:127.0.0.1", bind(v6, (struct sockaddr *)&mapped, sizeof mapped));
    close(v6);
    v6 = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 v6any = a6("::", 0);
    R("bind v6 udp ::", bind(v6, (struct sockaddr *)&v6any, sizeof v6any));
    close(v6);
}

static void section_listen(void) {
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    R("listen udp", listen(u, 5));
    close(u);
    R("listen bad fd", listen(9999, 5));
    R("listen regular file", listen(file_fd, 5));
    int s = socket(AF_INET, SOCK_STREAM, 0);
    R("listen unbound tcp", listen(s, 5));
    fact("listen unbound tcp autobind", "%s", port_of(s) > 0 ? "nonzero" : "zero");
    R("listen twice", listen(s, 50));
    R("listen backlog -1", listen(s, -1));
    close(s);
    int c, a;
    tcp_pair(&c, &a);
    R("listen connected", listen(c, 5));
    close(c);
    close(a);
    s = socket(AF_INET6, SOCK_STREAM, 0);
    R("listen v6 unbound", listen(s, 5));
    close(s);
}

static void section_connect(void) {
    int l = listener4();
    int port = port_of(l);
    struct sockaddr_in ok = a4("127.0.0.1", port);
    struct sockaddr_in closed = a4("127.0.0.1", closed_port());
    int s = socket(AF_INET, SOCK_STREAM, 0);
    // Before connect: nothing to read or write, and nothing blocks.
    char b1[1] = {'x'};
    R("recv before connect", recv(s, b1, 1, 0));
    R("read before connect", read(s, b1, 1));
    R("send before connect", send(s, b1, 1, MSG_NOSIGNAL));
    struct pollfd fresh = {.fd = s, .events = POLLIN | POLLOUT | POLLRDHUP};
    R("poll before connect", poll(&fresh, 1, 0));
    fact("poll before connect revents", "%#x", fresh.revents);
    R("connect closed port", connect(s, (struct sockaddr *)&closed, sizeof closed));
    close(s);
    s = socket(AF_INET, SOCK_STREAM, 0);
    R("connect bad fd", connect(9999, (struct sockaddr *)&ok, sizeof ok));
    R("connect regular file", connect(file_fd, (struct sockaddr *)&ok, sizeof ok));
    R("connect NULL addr", connect(s, NULL, sizeof ok));
    R("connect addr 0x1", connect(s, BAD1, sizeof ok));
    R("connect kernel addr", connect(s, KERNEL, sizeof ok));
    R("connect len 0", connect(s, (struct sockaddr *)&ok, 0));
    R("connect len 15", connect(s, (struct sockaddr *)&ok, 15));
    struct sockaddr_in6 six = a6("::1", port);
    R("connect v4 socket AF_INET6 addr", connect(s, (struct sockaddr *)&six, sizeof six));
    struct sockaddr_in uns = ok;
    uns.sin_family = AF_UNSPEC;
    R("connect AF_UNSPEC unconnected tcp", connect(s, (struct sockaddr *)&uns, sizeof uns));
    struct sockaddr_in net = a4("10.0.0.1", 80);
    R("connect 10.0.0.1 (no route)", connect(s, (struct sockaddr *)&net, sizeof net));
    R("connect listener", connect(s, (struct sockaddr *)&ok, sizeof ok));
    R("connect again", connect(s, (struct sockaddr *)&ok, sizeof ok));
    int a = accept(l, NULL, NULL);
    close(a);
    close(s);

    s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in zero = a4("0.0.0.0", port);
    R("connect 0.0.0.0:listener", connect(s, (struct sockaddr *)&zero, sizeof zero));
    a = accept(l, NULL, NULL);
    close(a);
    close(s);
    s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in two = a4("127.0.0.2", port);
    R("connect 127.0.0.2 to 127.0.0.1 listener", connect(s, (struct sockaddr *)&two, sizeof two));
    close(s);
    s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in p0 = a4("127.0.0.1", 0);
    R("connect port 0", connect(s, (struct sockaddr *)&p0, sizeof p0));
    close(s);
    R("connect listening socket", connect(l, (struct sockaddr *)&ok, sizeof ok));

    // Non-blocking.
    s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    R("connect nonblocking listener", connect(s, (struct sockaddr *)&ok, sizeof ok));
    struct pollfd p = {.fd = s, .events = POLLOUT};
    R("connect nonblocking poll", poll(&p, 1, 5000));
    fact("connect nonblocking revents", "%#x", p.revents);
    fact("connect nonblocking SO_ERROR", "%d", geti(s, SOL_SOCKET, SO_ERROR));
    R("connect nonblocking after completion", connect(s, (struct sockaddr *)&ok, sizeof ok));
    a = accept(l, NULL, NULL);
    close(a);
    close(s);
    s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    R("connect nonblocking closed port", connect(s, (struct sockaddr *)&closed, sizeof closed));
    p.fd = s;
    p.events = POLLOUT;
    R("connect nonblocking closed poll", poll(&p, 1, 5000));
    fact("connect nonblocking closed ready", "out_or_err=%d", !!(p.revents & (POLLOUT | POLLERR)));
    int e = geti(s, SOL_SOCKET, SO_ERROR);
    fact("connect nonblocking closed SO_ERROR", "%s", e ? en(e) : "0");
    e = geti(s, SOL_SOCKET, SO_ERROR);
    fact("connect nonblocking closed SO_ERROR again", "%s", e ? en(e) : "0");
    close(s);

    // UDP.
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    R("connect udp closed port", connect(u, (struct sockaddr *)&closed, sizeof closed));
    R("send udp to closed port", send(u, "hello", 5, 0));
    usleep(100000);
    R("recv udp after port unreachable", recv(u, (char[16]){0}, 16, MSG_DONTWAIT));
    R("recv udp again", recv(u, (char[16]){0}, 16, MSG_DONTWAIT));
    R("connect udp AF_UNSPEC", connect(u, (struct sockaddr *)&uns, sizeof uns));
    R("getpeername udp after AF_UNSPEC", getpeername(u, (struct sockaddr *)&(struct sockaddr_storage){0}, &(socklen_t){128}));
    R("connect udp 10.0.0.1", connect(u, (struct sockaddr *)&net, sizeof net));
    close(u);

    // IPv6.
    int v6 = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 closed6 = a6("::1", ntohs(closed.sin_port));
    R("connect v6 closed port", connect(v6, (struct sockaddr *)&closed6, sizeof closed6));
    close(v6);
    v6 = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 mapped = a6("::ffff:127.0.0.1", port);
    R("connect v6 mapped to v4 listener", connect(v6, (struct sockaddr *)&mapped, sizeof mapped));
    a = accept(l, NULL, NULL);
    close(a);
    close(v6);
    v6 = socket(AF_INET6, SOCK_STREAM, 0);
    seti(v6, IPPROTO_IPV6, IPV6_V6ONLY, 1);
    R("connect v6only mapped", connect(v6, (struct sockaddr *)&mapped, sizeof mapped));
    close(v6);
    v6 = socket(AF_INET6, SOCK_STREAM, 0);
    R("connect v6 len 16", connect(v6, (struct sockaddr *)&six, 16));
    close(v6);
    // glibc's getaddrinfo dissolves a probe socket's association this way.
    int u6 = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 closed6u = a6("::1", 9);
    R("connect udp6 ::1", connect(u6, (struct sockaddr *)&closed6u, sizeof closed6u));
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    R("connect udp6 AF_UNSPEC len 16", connect(u6, &unspec, sizeof unspec));
    R("getpeername udp6 after AF_UNSPEC",
      getpeername(u6, (struct sockaddr *)&(struct sockaddr_storage){0}, &(socklen_t){128}));
    R("connect udp6 v4 address len 16", connect(u6, (struct sockaddr *)&ok, sizeof ok));
    close(u6);
    close(l);
}

static void section_accept(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    R("accept not listening", accept(s, NULL, NULL));
    close(s);
    R("accept bad fd", accept(9999, NULL, NULL));
    R("accept regular file", accept(file_fd, NULL, NULL));
    int u = udp4_bound();
    R("accept udp", accept(u, NULL, NULL));
    close(u);

    int l = listener4();
    int port = port_of(l);
    fcntl(l, F_SETFL, O_NONBLOCK);
    R("accept nonblocking empty (fcntl O_NONBLOCK)", accept(l, NULL, NULL));
    R("accept4 bad flags", accept4(l, NULL, NULL, 0x1234));
    struct pollfd p = {.fd = l, .events = POLLIN};
    R("poll empty listener", poll(&p, 1, 0));

    int c = connect4(port);
    R("poll listener with pending", poll(&p, 1, 5000));
    fact("poll listener revents", "%#x", p.revents);
    struct sockaddr_storage ss;
    socklen_t len = 4;
    int a = RFD("accept addrlen 4", accept(l, (struct sockaddr *)&ss, &len));
    fact("accept addrlen 4 result", "len=%u family=%d", len, ss.ss_family);
    R("poll listener after accept", poll(&p, 1, 0));
    len = sizeof ss;
    getpeername(a, (struct sockaddr *)&ss, &len);
    fact("accepted getpeername is client's getsockname", "%s",
         ntohs(((struct sockaddr_in *)&ss)->sin_port) == port_of(c) ? "match" : "differ");
    fact("accepted getsockname is listener's port", "%s", port_of(a) == port ? "match" : "differ");
    fact("accepted fd nonblocking (listener was)", "%d", !!(fcntl(a, F_GETFL) & O_NONBLOCK));
    close(a);
    close(c);

    c = connect4(port);
    readable(l, 5000);
    a = RFD("accept4 NONBLOCK|CLOEXEC", accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC));
    fact("accept4 flags", "nonblock=%d cloexec=%d", !!(fcntl(a, F_GETFL) & O_NONBLOCK),
         !!(fcntl(a, F_GETFD) & FD_CLOEXEC));
    close(a);
    close(c);

    c = connect4(port);
    readable(l, 5000);
    len = sizeof ss;
    a = RFD("accept addr NULL, addrlen set", accept(l, NULL, &len));
    close(a);
    close(c);

    c = connect4(port);
    readable(l, 5000);
    socklen_t neg = (socklen_t)-1;
    R("accept pending, addrlen -1", accept(l, (struct sockaddr *)&ss, &neg));
    R("accept after failed accept (addrlen -1)", accept(l, NULL, NULL));
    close(c);
    c = connect4(port);
    readable(l, 5000);
    len = 16;
    R("accept pending, addr 0x1", accept(l, BAD1, &len));
    R("accept after failed accept (addr 0x1)", accept(l, NULL, NULL));
    close(c);
    c = connect4(port);
    readable(l, 5000);
    R("accept pending, addrlen ptr 0x1", accept(l, (struct sockaddr *)&ss, BAD1));
    R("accept after failed accept (addrlen ptr 0x1)", accept(l, NULL, NULL));
    close(c);
    close(l);

    int v6 = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 any6 = a6("::", 0);
    bind(v6, (struct sockaddr *)&any6, sizeof any6);
    listen(v6, 4);
    c = connect4(port_of(v6));
    len = sizeof ss;
    char buf[64];
    a = RFD("accept v4 client on dual v6 listener", accept(v6, (struct sockaddr *)&ss, &len));
    fact("accept v4 client on dual v6 listener addr", "len=%u family=%d addr=%s", len, ss.ss_family,
         addr_str(&ss, buf, sizeof buf));
    close(a);
    close(c);
    close(v6);
}

static void section_names(void) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char buf[64];
    int s = socket(AF_INET, SOCK_STREAM, 0);
    memset(&ss, 0xaa, sizeof ss);
    R("getsockname unbound tcp", getsockname(s, (struct sockaddr *)&ss, &len));
    fact("getsockname unbound tcp result", "len=%u family=%d addr=%s port=%d", len, ss.ss_family,
         addr_str(&ss, buf, sizeof buf), ntohs(((struct sockaddr_in *)&ss)->sin_port));
    len = sizeof ss;
    R("getpeername unconnected", getpeername(s, (struct sockaddr *)&ss, &len));
    R("getsockname len ptr NULL", getsockname(s, (struct sockaddr *)&ss, NULL));
    len = 16;
    R("getsockname addr NULL", getsockname(s, NULL, &len));
    len = 16;
    R("getsockname addr 0x1", getsockname(s, BAD1, &len));
    len = 16;
    R("getsockname addr read-only page", getsockname(s, READONLY, &len));
    R("getsockname len ptr read-only page", getsockname(s, (struct sockaddr *)&ss, READONLY));
    len = (socklen_t)-1;
    R("getsockname len -1", getsockname(s, (struct sockaddr *)&ss, &len));
    len = 4;
    memset(&ss, 0xaa, sizeof ss);
    RX("getsockname len 4", getsockname(s, (struct sockaddr *)&ss, &len), "len=%u byte4=%#x", len,
       ((unsigned char *)&ss)[4]);
    len = 0;
    RX("getsockname len 0", getsockname(s, (struct sockaddr *)&ss, &len), "len=%u", len);
    len = sizeof ss;
    R("getsockname bad fd", getsockname(9999, (struct sockaddr *)&ss, &len));
    R("getsockname regular file", getsockname(file_fd, (struct sockaddr *)&ss, &len));
    R("getpeername regular file", getpeername(file_fd, (struct sockaddr *)&ss, &len));
    close(s);

    s = socket(AF_INET6, SOCK_STREAM, 0);
    len = sizeof ss;
    RX("getsockname v6 unbound", getsockname(s, (struct sockaddr *)&ss, &len), "len=%u family=%d addr=%s",
       len, ss.ss_family, addr_str(&ss, buf, sizeof buf));
    close(s);

    int l = listener4();
    len = sizeof ss;
    R("getpeername listening", getpeername(l, (struct sockaddr *)&ss, &len));
    close(l);

    int u = socket(AF_INET, SOCK_DGRAM, 0);
    len = sizeof ss;
    RX("getsockname udp unbound", getsockname(u, (struct sockaddr *)&ss, &len), "len=%u addr=%s port=%d",
       len, addr_str(&ss, buf, sizeof buf), ntohs(((struct sockaddr_in *)&ss)->sin_port));
    struct sockaddr_in dst = a4("127.0.0.1", 9);
    connect(u, (struct sockaddr *)&dst, sizeof dst);
    len = sizeof ss;
    RX("getsockname udp after connect", getsockname(u, (struct sockaddr *)&ss, &len), "addr=%s port=%s",
       addr_str(&ss, buf, sizeof buf), ntohs(((struct sockaddr_in *)&ss)->sin_port) ? "nonzero" : "zero");
    len = sizeof ss;
    RX("getpeername udp connected", getpeername(u, (struct sockaddr *)&ss, &len), "len=%u addr=%s port=%d",
       len, addr_str(&ss, buf, sizeof buf), ntohs(((struct sockaddr_in *)&ss)->sin_port));
    close(u);

    int c, a;
    tcp_pair(&c, &a);
    close(a);
    usleep(50000);
    len = sizeof ss;
    RX("getpeername after peer closed", getpeername(c, (struct sockaddr *)&ss, &len), "addr=%s",
       addr_str(&ss, buf, sizeof buf));
    close(c);
}

static void section_sockopt(void) {
    int t = socket(AF_INET, SOCK_STREAM, 0);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    int t6 = socket(AF_INET6, SOCK_STREAM, 0);
    int v;
    socklen_t len;
    fact("SO_TYPE tcp", "%d", geti(t, SOL_SOCKET, SO_TYPE));
    fact("SO_TYPE udp", "%d", geti(u, SOL_SOCKET, SO_TYPE));
    fact("SO_DOMAIN tcp v4/v6", "%d %d", geti(t, SOL_SOCKET, SO_DOMAIN), geti(t6, SOL_SOCKET, SO_DOMAIN));
    fact("SO_PROTOCOL tcp/udp", "%d %d", geti(t, SOL_SOCKET, SO_PROTOCOL), geti(u, SOL_SOCKET, SO_PROTOCOL));
    fact("SO_ACCEPTCONN unbound", "%d", geti(t, SOL_SOCKET, SO_ACCEPTCONN));
    fact("SO_ERROR fresh", "%d", geti(t, SOL_SOCKET, SO_ERROR));
    fact("SO_REUSEADDR default", "%d", geti(t, SOL_SOCKET, SO_REUSEADDR));
    fact("SO_KEEPALIVE default", "%d", geti(t, SOL_SOCKET, SO_KEEPALIVE));
    fact("TCP_NODELAY default", "%d", geti(t, IPPROTO_TCP, TCP_NODELAY));
    fact("IP_TTL default", "%d", geti(t, IPPROTO_IP, IP_TTL));
    fact("IP_TOS default", "%d", geti(t, IPPROTO_IP, IP_TOS));
    fact("IPV6_V6ONLY default", "%d", geti(t6, IPPROTO_IPV6, IPV6_V6ONLY));
    fact("IPV6_UNICAST_HOPS default", "%d", geti(t6, IPPROTO_IPV6, IPV6_UNICAST_HOPS));
    fact("SO_BROADCAST default", "%d", geti(u, SOL_SOCKET, SO_BROADCAST));
    fact("SO_LINGER default", "%d", geti(t, SOL_SOCKET, SO_LINGER));
    fact("SO_RCVLOWAT default", "%d", geti(t, SOL_SOCKET, SO_RCVLOWAT));

    v = 0;
    len = sizeof v;
    R("getsockopt SOL_SOCKET 9999", getsockopt(t, SOL_SOCKET, 9999, &v, &len));
    len = sizeof v;
    R("getsockopt level 9999 tcp", getsockopt(t, 9999, 1, &v, &len));
    len = sizeof v;
    R("getsockopt level 9999 udp", getsockopt(u, 9999, 1, &v, &len));
    len = sizeof v;
    R("getsockopt IPPROTO_TCP 9999", getsockopt(t, IPPROTO_TCP, 9999, &v, &len));
    len = sizeof v;
    R("getsockopt IPPROTO_IP 9999", getsockopt(t, IPPROTO_IP, 9999, &v, &len));
    len = (socklen_t)-1;
    R("getsockopt optlen -1", getsockopt(t, SOL_SOCKET, SO_TYPE, &v, &len));
    len = 4;
    R("getsockopt optval NULL", getsockopt(t, SOL_SOCKET, SO_TYPE, NULL, &len));
    len = 4;
    R("getsockopt optval 0x1", getsockopt(t, SOL_SOCKET, SO_TYPE, BAD1, &len));
    len = 4;
    R("getsockopt optval read-only page", getsockopt(t, SOL_SOCKET, SO_TYPE, READONLY, &len));
    R("getsockopt optlen NULL", getsockopt(t, SOL_SOCKET, SO_TYPE, &v, NULL));
    R("getsockopt optlen 0x1", getsockopt(t, SOL_SOCKET, SO_TYPE, &v, BAD1));
    v = -1;
    len = 2;
    RX("getsockopt SO_TYPE optlen 2", getsockopt(t, SOL_SOCKET, SO_TYPE, &v, &len), "len=%u v=%#x", len, v);
    v = -1;
    len = 0;
    RX("getsockopt SO_TYPE optlen 0", getsockopt(t, SOL_SOCKET, SO_TYPE, &v, &len), "len=%u v=%#x", len, v);
    len = 100;
    char big[100];
    RX("getsockopt SO_TYPE optlen 100", getsockopt(t, SOL_SOCKET, SO_TYPE, big, &len), "len=%u", len);
    v = -1;
    len = 1;
    RX("getsockopt TCP_NODELAY optlen 1", getsockopt(t, IPPROTO_TCP, TCP_NODELAY, &v, &len), "len=%u", len);
    v = -1;
    len = 1;
    RX("getsockopt IP_TTL optlen 1", getsockopt(t, IPPROTO_IP, IP_TTL, &v, &len), "len=%u v=%#x", len, v);
    len = sizeof v;
    R("getsockopt bad fd", getsockopt(9999, SOL_SOCKET, SO_TYPE, &v, &len));
    R("getsockopt regular file", getsockopt(file_fd, SOL_SOCKET, SO_TYPE, &v, &len));
    v = 1;
    R("setsockopt bad fd", setsockopt(9999, SOL_SOCKET, SO_REUSEADDR, &v, sizeof v));
    R("setsockopt regular file", setsockopt(file_fd, SOL_SOCKET, SO_REUSEADDR, &v, sizeof v));
    R("setsockopt SO_REUSEADDR optlen 2", setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &v, 2));
    R("setsockopt SO_REUSEADDR optval NULL", setsockopt(t, SOL_SOCKET, SO_REUSEADDR, NULL, 4));
    R("setsockopt SO_REUSEADDR optval 0x1", setsockopt(t, SOL_SOCKET, SO_REUSEADDR, BAD1, 4));
    R("setsockopt SOL_SOCKET 9999", setsockopt(t, SOL_SOCKET, 9999, &v, sizeof v));
    R("setsockopt IPPROTO_TCP 9999", setsockopt(t, IPPROTO_TCP, 9999, &v, sizeof v));
    R("setsockopt level 9999", setsockopt(t, 9999, 1, &v, sizeof v));
    R("setsockopt SO_ERROR", setsockopt(t, SOL_SOCKET, SO_ERROR, &v, sizeof v));
    R("setsockopt SO_TYPE", setsockopt(t, SOL_SOCKET, SO_TYPE, &v, sizeof v));

    R("set SO_REUSEADDR 1", seti(t, SOL_SOCKET, SO_REUSEADDR, 1));
    fact("get SO_REUSEADDR", "%d", geti(t, SOL_SOCKET, SO_REUSEADDR));
    R("set SO_REUSEADDR 5", seti(t, SOL_SOCKET, SO_REUSEADDR, 5));
    fact("get SO_REUSEADDR after 5", "%d", geti(t, SOL_SOCKET, SO_REUSEADDR));
    R("set SO_REUSEPORT 1", seti(t, SOL_SOCKET, SO_REUSEPORT, 1));
    fact("get SO_REUSEPORT", "%d", geti(t, SOL_SOCKET, SO_REUSEPORT));
    R("set SO_KEEPALIVE 1", seti(t, SOL_SOCKET, SO_KEEPALIVE, 1));
    fact("get SO_KEEPALIVE", "%d", geti(t, SOL_SOCKET, SO_KEEPALIVE));
    R("set TCP_NODELAY 7", seti(t, IPPROTO_TCP, TCP_NODELAY, 7));
    fact("get TCP_NODELAY", "%d", geti(t, IPPROTO_TCP, TCP_NODELAY));
    R("set TCP_NODELAY on udp", seti(u, IPPROTO_TCP, TCP_NODELAY, 1));
    R("set SO_RCVBUF 65536", seti(t, SOL_SOCKET, SO_RCVBUF, 65536));
    fact("get SO_RCVBUF", "%d", geti(t, SOL_SOCKET, SO_RCVBUF));
    R("set SO_SNDBUF 65536", seti(t, SOL_SOCKET, SO_SNDBUF, 65536));
    fact("get SO_SNDBUF", "%d", geti(t, SOL_SOCKET, SO_SNDBUF));
    R("set SO_RCVBUF 1", seti(u, SOL_SOCKET, SO_RCVBUF, 1));
    fact("get SO_RCVBUF after 1", "%d", geti(u, SOL_SOCKET, SO_RCVBUF));
    struct linger lg = {.l_onoff = 1, .l_linger = 5};
    R("set SO_LINGER {1,5}", setsockopt(t, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    R("set SO_LINGER optlen 4", setsockopt(t, SOL_SOCKET, SO_LINGER, &lg, 4));
    memset(&lg, 0, sizeof lg);
    len = sizeof lg;
    RX("get SO_LINGER", getsockopt(t, SOL_SOCKET, SO_LINGER, &lg, &len), "len=%u onoff=%d linger=%d", len,
       lg.l_onoff, lg.l_linger);
    // Multiples of 4 ms, so the kernel's jiffies (HZ 250) round nothing.
    struct timeval tv = {.tv_sec = 1, .tv_usec = 500000};
    R("set SO_RCVTIMEO 1.5s", setsockopt(t, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    memset(&tv, 0, sizeof tv);
    len = sizeof tv;
    RX("get SO_RCVTIMEO", getsockopt(t, SOL_SOCKET, SO_RCVTIMEO, &tv, &len), "len=%u %ld.%06ld", len,
       (long)tv.tv_sec, (long)tv.tv_usec);
    R("set SO_RCVTIMEO optlen 3", setsockopt(t, SOL_SOCKET, SO_RCVTIMEO, &tv, 3));
    tv.tv_usec = 2000000;
    R("set SO_RCVTIMEO usec 2000000", setsockopt(t, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    tv = (struct timeval){.tv_sec = 0, .tv_usec = 500000};
    R("set SO_SNDTIMEO 0.5s", setsockopt(t, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv));
    memset(&tv, 0, sizeof tv);
    len = sizeof tv;
    RX("get SO_SNDTIMEO", getsockopt(t, SOL_SOCKET, SO_SNDTIMEO, &tv, &len), "%ld.%06ld", (long)tv.tv_sec,
       (long)tv.tv_usec);
    R("set TCP_KEEPIDLE 0", seti(t, IPPROTO_TCP, TCP_KEEPIDLE, 0));
    R("set TCP_KEEPIDLE 100", seti(t, IPPROTO_TCP, TCP_KEEPIDLE, 100));
    fact("get TCP_KEEPIDLE", "%d", geti(t, IPPROTO_TCP, TCP_KEEPIDLE));
    R("set TCP_KEEPINTVL 50", seti(t, IPPROTO_TCP, TCP_KEEPINTVL, 50));
    fact("get TCP_KEEPINTVL", "%d", geti(t, IPPROTO_TCP, TCP_KEEPINTVL));
    R("set TCP_KEEPCNT 5", seti(t, IPPROTO_TCP, TCP_KEEPCNT, 5));
    fact("get TCP_KEEPCNT", "%d", geti(t, IPPROTO_TCP, TCP_KEEPCNT));
    R("set TCP_KEEPCNT 0", seti(t, IPPROTO_TCP, TCP_KEEPCNT, 0));
    R("set TCP_KEEPCNT 1000", seti(t, IPPROTO_TCP, TCP_KEEPCNT, 1000));
    R("set IP_TTL 0", seti(t, IPPROTO_IP, IP_TTL, 0));
    R("set IP_TTL 256", seti(t, IPPROTO_IP, IP_TTL, 256));
    R("set IP_TTL 200", seti(t, IPPROTO_IP, IP_TTL, 200));
    fact("get IP_TTL", "%d", geti(t, IPPROTO_IP, IP_TTL));
    R("set IP_TTL -1", seti(t, IPPROTO_IP, IP_TTL, -1));
    fact("get IP_TTL after -1", "%d", geti(t, IPPROTO_IP, IP_TTL));
    R("set IP_TOS 0x10", seti(t, IPPROTO_IP, IP_TOS, 0x10));
    fact("get IP_TOS", "%#x", geti(t, IPPROTO_IP, IP_TOS));
    R("set IPV6_V6ONLY on v4", seti(t, IPPROTO_IPV6, IPV6_V6ONLY, 1));
    fact("get IPV6_V6ONLY on v4", "%d", geti(t, IPPROTO_IPV6, IPV6_V6ONLY));
    R("set IPV6_V6ONLY 1", seti(t6, IPPROTO_IPV6, IPV6_V6ONLY, 1));
    fact("get IPV6_V6ONLY", "%d", geti(t6, IPPROTO_IPV6, IPV6_V6ONLY));
    R("set SO_BROADCAST 1", seti(u, SOL_SOCKET, SO_BROADCAST, 1));
    fact("get SO_BROADCAST", "%d", geti(u, SOL_SOCKET, SO_BROADCAST));
    R("set SO_RCVLOWAT 10", seti(t, SOL_SOCKET, SO_RCVLOWAT, 10));
    fact("get SO_RCVLOWAT", "%d", geti(t, SOL_SOCKET, SO_RCVLOWAT));
    R("set IP_TTL on udp 33", seti(u, IPPROTO_IP, IP_TTL, 33));
    fact("get IP_TTL on udp", "%d", geti(u, IPPROTO_IP, IP_TTL));

    int l = listener4();
    fact("SO_ACCEPTCONN listening", "%d", geti(l, SOL_SOCKET, SO_ACCEPTCONN));
    fact("TCP_NODELAY listening", "%d", geti(l, IPPROTO_TCP, TCP_NODELAY));
    struct tcp_info ti;
    memset(&ti, 0xff, sizeof ti);
    len = sizeof ti;
    RX("TCP_INFO listening", getsockopt(l, IPPROTO_TCP, TCP_INFO, &ti, &len), "state=%d", ti.tcpi_state);
    close(l);
    int c, a;
    tcp_pair(&c, &a);
    memset(&ti, 0xff, sizeof ti);
    len = sizeof ti;
    RX("TCP_INFO established", getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &len), "state=%d", ti.tcpi_state);
    memset(&ti, 0xff, sizeof ti);
    len = 1;
    RX("TCP_INFO optlen 1", getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &len), "len=%u state=%d", len,
       ti.tcpi_state);
    fact("SO_ERROR established", "%d", geti(c, SOL_SOCKET, SO_ERROR));
    fact("SO_ACCEPTCONN accepted", "%d", geti(a, SOL_SOCKET, SO_ACCEPTCONN));
    close(c);
    close(a);
    memset(&ti, 0xff, sizeof ti);
    len = sizeof ti;
    RX("TCP_INFO closed (fresh)", getsockopt(t, IPPROTO_TCP, TCP_INFO, &ti, &len), "state=%d", ti.tcpi_state);
    close(t);
    close(u);
    close(t6);
}

static void section_shutdown(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    R("shutdown unconnected tcp", shutdown(s, SHUT_RDWR));
    close(s);
    R("shutdown bad fd", shutdown(9999, SHUT_RDWR));
    R("shutdown regular file", shutdown(file_fd, SHUT_RDWR));
    int c, a;
    tcp_pair(&c, &a);
    R("shutdown how 5", shutdown(c, 5));
    R("shutdown how -1", shutdown(c, -1));
    R("send before SHUT_WR", send(c, "abc", 3, MSG_NOSIGNAL));
    R("shutdown SHUT_WR", shutdown(c, SHUT_WR));
    readable(a, 5000);
    char buf[16];
    R("peer read data before EOF", read(a, buf, sizeof buf));
    readable(a, 5000);
    R("peer read after SHUT_WR (EOF)", read(a, buf, sizeof buf));
    R("send after SHUT_WR", send(c, "x", 1, MSG_NOSIGNAL));
    R("peer can still send", send(a, "back", 4, MSG_NOSIGNAL));
    readable(c, 5000);
    R("read after own SHUT_WR", read(c, buf, sizeof buf));
    R("shutdown SHUT_WR again", shutdown(c, SHUT_WR));
    R("shutdown SHUT_RD", shutdown(c, SHUT_RD));
    R("recv after SHUT_RD", recv(c, buf, sizeof buf, MSG_DONTWAIT));
    close(c);
    close(a);

    int l = listener4();
    R("shutdown listening SHUT_RDWR", shutdown(l, SHUT_RDWR));
    R("accept after shutdown listener", accept(l, NULL, NULL));
    close(l);

    int u = socket(AF_INET, SOCK_DGRAM, 0);
    R("shutdown udp unconnected", shutdown(u, SHUT_RDWR));
    struct sockaddr_in dst = a4("127.0.0.1", 9);
    connect(u, (struct sockaddr *)&dst, sizeof dst);
    R("shutdown udp connected", shutdown(u, SHUT_RDWR));
    close(u);
}

static void section_sendto(void) {
    int r = udp4_bound();
    int s = udp4_bound();
    struct sockaddr_in to = a4("127.0.0.1", port_of(r));
    struct sockaddr_storage from;
    socklen_t len;
    char buf[70000];
    char *big = calloc(1, 70000);

    R("sendto udp 5 bytes", sendto(s, "hello", 5, 0, (struct sockaddr *)&to, sizeof to));
    readable(r, 5000);
    len = sizeof from;
    memset(buf, 0, 16);
    RX("recvfrom udp", recvfrom(r, buf, sizeof buf, 0, (struct sockaddr *)&from, &len),
       "data=%s len=%u from_port=%s", buf, len,
       ntohs(((struct sockaddr_in *)&from)->sin_port) == port_of(s) ? "match" : "differ");
    R("sendto addrlen 0", sendto(s, "x", 1, 0, (struct sockaddr *)&to, 0));
    R("sendto addrlen 8", sendto(s, "x", 1, 0, (struct sockaddr *)&to, 8));
    R("sendto addr 0x1", sendto(s, "x", 1, 0, BAD1, sizeof to));
    R("sendto addr unmapped", sendto(s, "x", 1, 0, UNMAPPED, sizeof to));
    R("sendto addr PROT_NONE", sendto(s, "x", 1, 0, PROTNONE, sizeof to));
    R("sendto buf PROT_NONE", sendto(s, PROTNONE, 5, 0, (struct sockaddr *)&to, sizeof to));
    struct sockaddr_in6 six = a6("::1", port_of(r));
    R("sendto v4 socket AF_INET6 addr", sendto(s, "x", 1, 0, (struct sockaddr *)&six, sizeof six));
    R("sendto buf 0x1", sendto(s, BAD1, 5, 0, (struct sockaddr *)&to, sizeof to));
    R("sendto buf kernel", sendto(s, KERNEL, 5, 0, (struct sockaddr *)&to, sizeof to));
    R("sendto bad fd", sendto(9999, "x", 1, 0, (struct sockaddr *)&to, sizeof to));
    R("sendto regular file", sendto(file_fd, "x", 1, 0, (struct sockaddr *)&to, sizeof to));
    len = sizeof from;
    R("recvfrom bad fd", recvfrom(9999, buf, 1, 0, (struct sockaddr *)&from, &len));
    R("recvfrom regular file", recvfrom(file_fd, buf, 1, 0, (struct sockaddr *)&from, &len));
    R("recvfrom MSG_DONTWAIT empty", recvfrom(r, buf, 16, MSG_DONTWAIT, (struct sockaddr *)&from, &len));
    fcntl(r, F_SETFL, O_NONBLOCK);
    R("recvfrom nonblocking empty", recvfrom(r, buf, 16, 0, (struct sockaddr *)&from, &len));
    R("recv nonblocking empty (native)", recv(r, buf, 16, 0));

    sendto(s, "0123456789", 10, 0, (struct sockaddr *)&to, sizeof to);
    readable(r, 5000);
    len = sizeof from;
    memset(buf, 0, 16);
    RX("recvfrom MSG_PEEK", recvfrom(r, buf, 16, MSG_PEEK, (struct sockaddr *)&from, &len), "data=%s", buf);
    len = sizeof from;
    memset(buf, 0, 16);
    RX("recvfrom MSG_TRUNC into 2 bytes", recvfrom(r, buf, 2, MSG_TRUNC, (struct sockaddr *)&from, &len),
       "data=%s", buf);
    R("recvfrom after truncated datagram", recvfrom(r, buf, 16, 0, (struct sockaddr *)&from, &len));

    sendto(s, "0123456789", 10, 0, (struct sockaddr *)&to, sizeof to);
    readable(r, 5000);
    len = sizeof from;
    memset(buf, 0, 16);
    RX("recvfrom into 4 bytes (no MSG_TRUNC)", recvfrom(r, buf, 4, 0, (struct sockaddr *)&from, &len),
       "data=%s", buf);
    R("recvfrom rest of datagram gone", recvfrom(r, buf, 16, 0, (struct sockaddr *)&from, &len));

    sendto(s, "abcdef", 6, 0, (struct sockaddr *)&to, sizeof to);
    readable(r, 5000);
    len = 4;
    memset(&from, 0xaa, sizeof from);
    RX("recvfrom addrlen 4", recvfrom(r, buf, 16, 0, (struct sockaddr *)&from, &len), "len=%u family=%d byte4=%#x",
       len, from.ss_family, ((unsigned char *)&from)[4]);

    sendto(s, "abcdef", 6, 0, (struct sockaddr *)&to, sizeof to);
    readable(r, 5000);
    len = (socklen_t)-1;
    R("recvfrom addrlen -1 with data", recvfrom(r, buf, 16, 0, (struct sockaddr *)&from, &len));
    len = sizeof from;
    R("recvfrom after addrlen -1", recvfrom(r, buf, 16, 0, (struct sockaddr *)&from, &len));

    sendto(s, "abcdef", 6, 0, (struct sockaddr *)&to, sizeof to);
    readable(r, 5000);
    len = sizeof from;
    R("recvfrom addr 0x1 with data", recvfrom(r, buf, 16, 0, BAD1, &len));
    R("recvfrom after addr 0x1", recvfrom(r, buf, 16, 0, (struct sockaddr *)&from, &len));

    sendto(s, "abcdef", 6, 0, (struct sockaddr *)&to, sizeof to);
    readable(r, 5000);
    len = sizeof from;
    R("recvfrom buf 0x1 with data", recvfrom(r, BAD1, 16, 0, (struct sockaddr *)&from, &len));
    R("recvfrom after buf 0x1", recvfrom(r, buf, 16, 0, (struct sockaddr *)&from, &len));

    sendto(s, "abcdef", 6, 0, (struct sockaddr *)&to, sizeof to);
    readable(r, 5000);
    R("recvfrom addrlen ptr 0x1 with data", recvfrom(r, buf, 16, 0, (struct sockaddr *)&from, BAD1));
    len = sizeof from;
    R("recvfrom after addrlen ptr 0x1", recvfrom(r, buf, 16, 0, (struct sockaddr *)&from, &len));

    R("sendto 60000 bytes", sendto(s, big, 60000, 0, (struct sockaddr *)&to, sizeof to));
    readable(r, 5000);
    len = sizeof from;
    R("recvfrom 60000 bytes", recvfrom(r, buf, sizeof buf, 0, (struct sockaddr *)&from, &len));
    R("sendto 65507 bytes", sendto(s, big, 65507, 0, (struct sockaddr *)&to, sizeof to));
    readable(r, 5000);
    R("recvfrom 65507 bytes", recvfrom(r, buf, sizeof buf, 0, (struct sockaddr *)&from, &len));
    R("sendto 65508 bytes", sendto(s, big, 65508, 0, (struct sockaddr *)&to, sizeof to));
    R("sendto 0 bytes", sendto(s, "", 0, 0, (struct sockaddr *)&to, sizeof to));
    readable(r, 5000);
    len = sizeof from;
    R("recvfrom empty datagram", recvfrom(r, buf, 16, 0, (struct sockaddr *)&from, &len));
    R("sendto MSG_OOB udp", sendto(s, "x", 1, MSG_OOB, (struct sockaddr *)&to, sizeof to));
    struct sockaddr_in net = a4("10.0.0.1", 53);
    R("sendto udp 10.0.0.1", sendto(s, "x", 1, 0, (struct sockaddr *)&net, sizeof net));
    struct sockaddr_in p0 = a4("127.0.0.1", 0);
    R("sendto udp port 0", sendto(s, "x", 1, 0, (struct sockaddr *)&p0, sizeof p0));
    struct sockaddr_in uns = to;
    uns.sin_family = AF_UNSPEC;
    R("sendto udp AF_UNSPEC", sendto(s, "x", 1, 0, (struct sockaddr *)&uns, sizeof uns));
    close(s);
    close(r);

    int u = socket(AF_INET, SOCK_DGRAM, 0);
    R("send unconnected udp (no address)", send(u, "x", 1, MSG_NOSIGNAL));
    R("recv unconnected unbound udp", recv(u, buf, 16, MSG_DONTWAIT));
    close(u);

    int u6 = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 closed6 = a6("::1", closed_port());
    R("sendto v6 udp ::1", sendto(u6, "hello", 5, 0, (struct sockaddr *)&closed6, sizeof closed6));
    R("sendto v6 udp len 16", sendto(u6, "hello", 5, 0, (struct sockaddr *)&closed6, 16));
    struct sockaddr_in v4 = a4("127.0.0.1", 9);
    R("sendto v6 socket AF_INET addr", sendto(u6, "x", 1, 0, (struct sockaddr *)&v4, sizeof v4));
    struct sockaddr_in6 m = a6("::ffff:127.0.0.1", 9);
    R("sendto v6 socket mapped addr", sendto(u6, "x", 1, 0, (struct sockaddr *)&m, sizeof m));
    R("sendto v6 65508 bytes", sendto(u6, big, 65508, 0, (struct sockaddr *)&closed6, sizeof closed6));
    close(u6);

    // TCP with addresses.
    int t = socket(AF_INET, SOCK_STREAM, 0);
    R("sendto unconnected tcp", sendto(t, "x", 1, MSG_NOSIGNAL, (struct sockaddr *)&to, sizeof to));
    close(t);
    int c, a;
    tcp_pair(&c, &a);
    struct sockaddr_in elsewhere = a4("127.0.0.1", 9);
    R("sendto connected tcp with address", sendto(c, "hello", 5, 0, (struct sockaddr *)&elsewhere, sizeof elsewhere));
    readable(a, 5000);
    len = sizeof from;
    memset(&from, 0xaa, sizeof from);
    memset(buf, 0, 16);
    RX("recvfrom tcp with address", recvfrom(a, buf, 16, 0, (struct sockaddr *)&from, &len),
       "data=%s len=%u", buf, len);
    R("send tcp MSG_OOB", send(c, "!", 1, MSG_OOB));
    usleep(50000);
    R("recv tcp MSG_OOB", recv(a, buf, 16, MSG_OOB | MSG_DONTWAIT));
    R("recv tcp MSG_OOB again", recv(a, buf, 16, MSG_OOB | MSG_DONTWAIT));
    close(c);
    close(a);
    free(big);
}

struct two_iov {
    struct iovec iov[2];
};

static void section_msg(void) {
    int r = udp4_bound();
    int s = udp4_bound();
    fcntl(r, F_SETFL, O_NONBLOCK);
    struct sockaddr_in to = a4("127.0.0.1", port_of(r));
    char buf[64];
    struct sockaddr_storage from;
    struct iovec iov[2] = {{"abc", 3}, {"de", 2}};
    struct msghdr m = {.msg_name = &to, .msg_namelen = sizeof to, .msg_iov = iov, .msg_iovlen = 2};

    R("sendmsg msghdr NULL", sendmsg(s, NULL, 0));
    R("sendmsg msghdr 0x1", sendmsg(s, BAD1, 0));
    R("sendmsg bad fd", sendmsg(9999, &m, 0));
    R("sendmsg regular file", sendmsg(file_fd, &m, 0));
    m.msg_iovlen = 1025;
    R("sendmsg iovlen 1025", sendmsg(s, &m, 0));
    m.msg_iovlen = 1;
    m.msg_iov = BAD1;
    R("sendmsg iov 0x1", sendmsg(s, &m, 0));
    struct iovec badbase = {BAD1, 5};
    m.msg_iov = &badbase;
    R("sendmsg iov_base 0x1", sendmsg(s, &m, 0));
    m.msg_iov = iov;
    m.msg_iovlen = 2;
    m.msg_namelen = 8;
    R("sendmsg namelen 8", sendmsg(s, &m, 0));
    m.msg_namelen = sizeof to;
    m.msg_name = BAD1;
    R("sendmsg name 0x1", sendmsg(s, &m, 0));
    m.msg_name = &to;
    R("sendmsg 2 iovecs", sendmsg(s, &m, 0));
    readable(r, 5000);

    struct iovec riov = {buf, sizeof buf};
    memset(buf, 0, sizeof buf);
    struct msghdr rm = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &riov, .msg_iovlen = 1};
    RX("recvmsg with name", recvmsg(r, &rm, 0), "data=%s namelen=%u flags=%#x from_port=%s", buf, rm.msg_namelen,
       rm.msg_flags, ntohs(((struct sockaddr_in *)&from)->sin_port) == port_of(s) ? "match" : "differ");
    R("recvmsg msghdr NULL", recvmsg(r, NULL, 0));
    R("recvmsg msghdr 0x1", recvmsg(r, BAD1, MSG_DONTWAIT));
    R("recvmsg empty", recvmsg(r, &rm, 0));
    rm.msg_namelen = (socklen_t)-1;
    R("recvmsg namelen -1", recvmsg(r, &rm, 0));
    rm.msg_namelen = sizeof from;

    sendto(s, "0123456789", 10, 0, (struct sockaddr *)&to, sizeof to);
    readable(r, 5000);
    riov.iov_len = 4;
    rm.msg_namelen = sizeof from;
    RX("recvmsg truncated", recvmsg(r, &rm, 0), "trunc=%d", !!(rm.msg_flags & MSG_TRUNC));
    sendto(s, "0123456789", 10, 0, (struct sockaddr *)&to, sizeof to);
    readable(r, 5000);
    rm.msg_namelen = sizeof from;
    RX("recvmsg MSG_PEEK|MSG_TRUNC", recvmsg(r, &rm, MSG_PEEK | MSG_TRUNC), "trunc=%d", !!(rm.msg_flags & MSG_TRUNC));
    riov.iov_len = sizeof buf;
    rm.msg_namelen = sizeof from;
    RX("recvmsg after peek", recvmsg(r, &rm, 0), "trunc=%d", !!(rm.msg_flags & MSG_TRUNC));
    rm.msg_name = NULL;
    rm.msg_namelen = 0;
    sendto(s, "xyz", 3, 0, (struct sockaddr *)&to, sizeof to);
    readable(r, 5000);
    R("recvmsg without name", recvmsg(r, &rm, 0));
    rm.msg_name = &from;

    // Control messages.
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    ctl.h.cmsg_len = CMSG_LEN(sizeof(int));
    ctl.h.cmsg_level = SOL_SOCKET;
    ctl.h.cmsg_type = SCM_RIGHTS;
    int one_fd = 0;
    memcpy(CMSG_DATA(&ctl.h), &one_fd, sizeof one_fd);
    m.msg_control = &ctl;
    m.msg_controllen = sizeof ctl;
    R("sendmsg SCM_RIGHTS on udp", sendmsg(s, &m, 0));
    readable(r, 5000);
    rm.msg_namelen = sizeof from;
    R("recvmsg after SCM_RIGHTS on udp", recvmsg(r, &rm, 0));
    m.msg_controllen = 5;
    R("sendmsg controllen 5", sendmsg(s, &m, 0));
    readable(r, 5000);
    rm.msg_namelen = sizeof from;
    R("recvmsg after controllen 5", recvmsg(r, &rm, 0));
    m.msg_control = BAD1;
    m.msg_controllen = 32;
    R("sendmsg control 0x1", sendmsg(s, &m, 0));
    m.msg_control = NULL;
    m.msg_controllen = 0;
    m.msg_iovlen = 0;
    R("sendmsg iovlen 0 (empty datagram)", sendmsg(s, &m, 0));
    readable(r, 5000);
    rm.msg_namelen = sizeof from;
    R("recvmsg empty datagram", recvmsg(r, &rm, 0));
    R("recvmsg nothing left", recvmsg(r, &rm, 0));
    m.msg_iovlen = 2;

    seti(r, IPPROTO_IP, IP_PKTINFO, 1);
    sendto(s, "pk", 2, 0, (struct sockaddr *)&to, sizeof to);
    readable(r, 5000);
    char cbuf[256];
    rm.msg_control = cbuf;
    rm.msg_controllen = sizeof cbuf;
    rm.msg_namelen = sizeof from;
    long n = recvmsg(r, &rm, 0);
    int ifindex = -1;
    char dst[32] = "none";
    for (struct cmsghdr *h = CMSG_FIRSTHDR(&rm); h; h = CMSG_NXTHDR(&rm, h)) {
        if (h->cmsg_level == IPPROTO_IP && h->cmsg_type == IP_PKTINFO) {
            struct in_pktinfo pi;
            memcpy(&pi, CMSG_DATA(h), sizeof pi);
            ifindex = pi.ipi_ifindex;
            inet_ntop(AF_INET, &pi.ipi_addr, dst, sizeof dst);
        }
    }
    fact("recvmsg IP_PKTINFO", "%ld ifindex=%d dst=%s", n, ifindex, dst);
    rm.msg_control = NULL;
    rm.msg_controllen = 0;
    seti(r, IPPROTO_IP, IP_PKTINFO, 0);

    // mmsg.
    R("sendmmsg vlen 0", sendmmsg(s, (struct mmsghdr[1]){0}, 0, 0));
    R("sendmmsg msgvec NULL", sendmmsg(s, NULL, 1, 0));
    struct mmsghdr mm[3];
    struct iovec miov[3] = {{"1", 1}, {"22", 2}, {"333", 3}};
    memset(mm, 0, sizeof mm);
    for (int i = 0; i < 3; i++) {
        mm[i].msg_hdr.msg_name = &to;
        mm[i].msg_hdr.msg_namelen = sizeof to;
        mm[i].msg_hdr.msg_iov = &miov[i];
        mm[i].msg_hdr.msg_iovlen = 1;
    }
    RX("sendmmsg 3", sendmmsg(s, mm, 3, 0), "lens=%u,%u,%u", mm[0].msg_len, mm[1].msg_len, mm[2].msg_len);
    usleep(50000);
    struct mmsghdr rmm[8];
    char rb[8][16];
    struct iovec riovs[8];
    struct sockaddr_in rfrom[8];
    memset(rmm, 0, sizeof rmm);
    for (int i = 0; i < 8; i++) {
        riovs[i] = (struct iovec){rb[i], 16};
        rmm[i].msg_hdr.msg_iov = &riovs[i];
        rmm[i].msg_hdr.msg_iovlen = 1;
        rmm[i].msg_hdr.msg_name = &rfrom[i];
        rmm[i].msg_hdr.msg_namelen = sizeof rfrom[i];
    }
    RX("recvmmsg 8", recvmmsg(r, rmm, 8, MSG_DONTWAIT, NULL), "lens=%u,%u,%u,%u namelen=%u", rmm[0].msg_len,
       rmm[1].msg_len, rmm[2].msg_len, rmm[3].msg_len, rmm[0].msg_hdr.msg_namelen);
    R("recvmmsg empty", recvmmsg(r, rmm, 8, MSG_DONTWAIT, NULL));
    mm[1].msg_hdr.msg_iov = BAD1;
    R("sendmmsg second message bad iov", sendmmsg(s, mm, 3, 0));
    mm[0].msg_hdr.msg_iov = BAD1;
    R("sendmmsg first message bad iov", sendmmsg(s, mm, 3, 0));
    usleep(50000);
    RX("recvmmsg after partial sendmmsg", recvmmsg(r, rmm, 8, MSG_DONTWAIT, NULL), "len0=%u", rmm[0].msg_len);
    R("recvmmsg msgvec 0x1", recvmmsg(r, BAD1, 8, MSG_DONTWAIT, NULL));
    R("recvmmsg bad fd", recvmmsg(9999, rmm, 8, MSG_DONTWAIT, NULL));
    R("recvmmsg timeout 0x1", recvmmsg(r, rmm, 8, MSG_DONTWAIT, BAD1));
    sendto(s, "a", 1, 0, (struct sockaddr *)&to, sizeof to);
    sendto(s, "b", 1, 0, (struct sockaddr *)&to, sizeof to);
    usleep(50000);
    R("recvmmsg MSG_WAITFORONE", recvmmsg(r, rmm, 8, MSG_WAITFORONE, NULL));
    close(r);
    close(s);

    // TCP *msg.
    int c, a;
    tcp_pair(&c, &a);
    struct iovec t3[3] = {{"ab", 2}, {"cd", 2}, {"ef", 2}};
    struct msghdr tm = {.msg_iov = t3, .msg_iovlen = 3};
    R("sendmsg tcp 3 iovecs", sendmsg(c, &tm, 0));
    readable(a, 5000);
    usleep(20000);
    riov.iov_len = sizeof buf;
    memset(buf, 0, sizeof buf);
    struct msghdr trm = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &riov, .msg_iovlen = 1};
    RX("recvmsg tcp", recvmsg(a, &trm, 0), "data=%s namelen=%u", buf, trm.msg_namelen);
    R("recvmsg tcp MSG_OOB none", recvmsg(a, &trm, MSG_OOB));
    R("recvmsg tcp MSG_DONTWAIT empty", recvmsg(a, &trm, MSG_DONTWAIT));
    R("recvmsg tcp MSG_ERRQUEUE", recvmsg(a, &trm, MSG_ERRQUEUE));
    close(c);
    close(a);
}

static void section_ioctl(void) {
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    RX("SIOCGIFINDEX lo", ioctl(u, SIOCGIFINDEX, &ifr), "index=%d", ifr.ifr_ifindex);
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    RX("SIOCGIFFLAGS lo", ioctl(u, SIOCGIFFLAGS, &ifr), "flags=%#x", (unsigned short)ifr.ifr_flags);
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    RX("SIOCGIFMTU lo", ioctl(u, SIOCGIFMTU, &ifr), "mtu=%d", ifr.ifr_mtu);
    char buf[64];
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    RX("SIOCGIFADDR lo", ioctl(u, SIOCGIFADDR, &ifr), "family=%d addr=%s", ifr.ifr_addr.sa_family,
       inet_ntop(AF_INET, &((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr, buf, sizeof buf));
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    RX("SIOCGIFNETMASK lo", ioctl(u, SIOCGIFNETMASK, &ifr), "addr=%s",
       inet_ntop(AF_INET, &((struct sockaddr_in *)&ifr.ifr_netmask)->sin_addr, buf, sizeof buf));
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    RX("SIOCGIFHWADDR lo", ioctl(u, SIOCGIFHWADDR, &ifr), "family=%d bytes=%02x%02x%02x%02x%02x%02x",
       ifr.ifr_hwaddr.sa_family, (unsigned char)ifr.ifr_hwaddr.sa_data[0], (unsigned char)ifr.ifr_hwaddr.sa_data[1],
       (unsigned char)ifr.ifr_hwaddr.sa_data[2], (unsigned char)ifr.ifr_hwaddr.sa_data[3],
       (unsigned char)ifr.ifr_hwaddr.sa_data[4], (unsigned char)ifr.ifr_hwaddr.sa_data[5]);
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_ifindex = 1;
    RX("SIOCGIFNAME 1", ioctl(u, SIOCGIFNAME, &ifr), "name=%s", ifr.ifr_name);
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_ifindex = 99;
    R("SIOCGIFNAME 99", ioctl(u, SIOCGIFNAME, &ifr));
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "nosuch0");
    R("SIOCGIFINDEX nosuch0", ioctl(u, SIOCGIFINDEX, &ifr));
    R("SIOCGIFFLAGS nosuch0", ioctl(u, SIOCGIFFLAGS, &ifr));
    R("SIOCGIFMTU nosuch0", ioctl(u, SIOCGIFMTU, &ifr));
    memset(&ifr, 'a', sizeof ifr);
    R("SIOCGIFINDEX unterminated name", ioctl(u, SIOCGIFINDEX, &ifr));
    R("SIOCGIFFLAGS arg 0x1", ioctl(u, SIOCGIFFLAGS, BAD1));
    R("SIOCGIFFLAGS arg NULL", ioctl(u, SIOCGIFFLAGS, NULL));
    R("SIOCGIFINDEX arg read-only page (name \"\")", ioctl(u, SIOCGIFINDEX, READONLY));
    R("SIOCGIFFLAGS arg PROT_NONE", ioctl(u, SIOCGIFFLAGS, PROTNONE));
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    R("SIOCGIFFLAGS regular file", ioctl(file_fd, SIOCGIFFLAGS, &ifr));
    R("SIOCGIFFLAGS bad fd", ioctl(9999, SIOCGIFFLAGS, &ifr));
    R("SIOCATMARK udp", ioctl(u, SIOCATMARK, &(int){0}));
    R("ioctl 0x89c5 (unknown SIOC)", ioctl(u, 0x89c5, &ifr));
    R("SIOCGSTAMP nothing received", ioctl(u, SIOCGSTAMP, &(struct timeval){0}));

    struct ifconf ifc = {.ifc_len = 0, .ifc_buf = NULL};
    RX("SIOCGIFCONF NULL buffer", ioctl(u, SIOCGIFCONF, &ifc), "len=%d", ifc.ifc_len);
    struct ifreq reqs[8];
    memset(reqs, 0, sizeof reqs);
    ifc.ifc_len = sizeof reqs;
    ifc.ifc_req = reqs;
    RX("SIOCGIFCONF", ioctl(u, SIOCGIFCONF, &ifc), "len=%d first=%s %s", ifc.ifc_len, reqs[0].ifr_name,
       inet_ntop(AF_INET, &((struct sockaddr_in *)&reqs[0].ifr_addr)->sin_addr, buf, sizeof buf));
    ifc.ifc_len = 10;
    RX("SIOCGIFCONF len 10", ioctl(u, SIOCGIFCONF, &ifc), "len=%d", ifc.ifc_len);
    ifc.ifc_len = sizeof reqs;
    ifc.ifc_buf = BAD1;
    R("SIOCGIFCONF buffer 0x1", ioctl(u, SIOCGIFCONF, &ifc));
    R("SIOCGIFCONF arg 0x1", ioctl(u, SIOCGIFCONF, BAD1));

    int v6 = socket(AF_INET6, SOCK_DGRAM, 0);
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    RX("SIOCGIFINDEX lo on v6 socket", ioctl(v6, SIOCGIFINDEX, &ifr), "index=%d", ifr.ifr_ifindex);
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    R("SIOCGIFADDR lo on v6 socket", ioctl(v6, SIOCGIFADDR, &ifr));
    close(v6);

    // FIONREAD: UDP reports the first datagram, TCP the bytes queued.
    int r = udp4_bound();
    struct sockaddr_in to = a4("127.0.0.1", port_of(r));
    sendto(u, "0123456789", 10, 0, (struct sockaddr *)&to, sizeof to);
    sendto(u, "01234567890123456789", 20, 0, (struct sockaddr *)&to, sizeof to);
    readable(r, 5000);
    usleep(20000);
    int avail = -1;
    RX("FIONREAD udp two datagrams", ioctl(r, FIONREAD, &avail), "avail=%d", avail);
    avail = -1;
    RX("FIONREAD udp empty (fresh)", ioctl(u, FIONREAD, &avail), "avail=%d", avail);
    close(r);
    int c, a;
    tcp_pair(&c, &a);
    send(c, "1234567", 7, 0);
    readable(a, 5000);
    usleep(20000);
    avail = -1;
    RX("FIONREAD tcp", ioctl(a, FIONREAD, &avail), "avail=%d", avail);
    int mark = -1;
    RX("SIOCATMARK tcp", ioctl(a, SIOCATMARK, &mark), "mark=%d", mark);
    close(c);
    close(a);
    close(u);
}

static void section_netlink(void) {
    int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    R("netlink bind", bind(nl, (struct sockaddr *)&sa, sizeof sa));
    socklen_t len = sizeof sa;
    RX("netlink getsockname", getsockname(nl, (struct sockaddr *)&sa, &len), "len=%u family=%d pid=%s", len,
       sa.nl_family, sa.nl_pid ? "nonzero" : "zero");
    int types[2] = {RTM_GETLINK, RTM_GETADDR};
    for (int k = 0; k < 2; k++) {
        struct {
            struct nlmsghdr h;
            struct rtgenmsg g;
        } req = {.h = {.nlmsg_len = sizeof req, .nlmsg_type = types[k], .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
                       .nlmsg_seq = 7 + k},
                 .g = {.rtgen_family = AF_UNSPEC}};
        send(nl, &req, sizeof req, 0);
        int links = 0, v4 = 0, v6 = 0, done = 0, other = 0;
        char first[IFNAMSIZ] = "";
        char rbuf[16384];
        while (!done) {
            if (readable(nl, 5000) <= 0)
                break;
            long n = recv(nl, rbuf, sizeof rbuf, 0);
            if (n <= 0)
                break;
            for (struct nlmsghdr *h = (void *)rbuf; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
                if (h->nlmsg_type == NLMSG_DONE) {
                    done = 1;
                } else if (h->nlmsg_type == RTM_NEWLINK) {
                    links++;
                    struct ifinfomsg *ifi = NLMSG_DATA(h);
                    int alen = IFLA_PAYLOAD(h);
                    for (struct rtattr *at = IFLA_RTA(ifi); RTA_OK(at, alen); at = RTA_NEXT(at, alen))
                        if (at->rta_type == IFLA_IFNAME && !first[0])
                            snprintf(first, sizeof first, "%s", (char *)RTA_DATA(at));
                } else if (h->nlmsg_type == RTM_NEWADDR) {
                    struct ifaddrmsg *ifa = NLMSG_DATA(h);
                    if (ifa->ifa_family == AF_INET)
                        v4++;
                    else if (ifa->ifa_family == AF_INET6)
                        v6++;
                } else {
                    other++;
                }
            }
        }
        if (k == 0)
            fact("netlink RTM_GETLINK dump", "links=%d first=%s done=%d other=%d", links, first, done, other);
        else
            fact("netlink RTM_GETADDR dump", "v4=%d v6=%d done=%d other=%d", v4, v6, done, other);
    }
    close(nl);
}

static void section_fds(void) {
    int l = listener4();
    int port = port_of(l);
    int d = dup(l);
    fact("getsockname via dup", "%s", port_of(d) == port ? "match" : "differ");
    int d2 = dup2(l, 200);
    fact("getsockname via dup2", "%s", port_of(d2) == port ? "match" : "differ");
    close(l);
    int c = connect4(port);
    int a = RFD("accept via dup after original closed", accept(d, NULL, NULL));
    close(a);
    close(c);
    close(d);
    close(d2);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    R("getsockname closed fd", getsockname(d, (struct sockaddr *)&ss, &len));

    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    len = sizeof ss;
    RX("getsockname unix socketpair", getsockname(sv[0], (struct sockaddr *)&ss, &len), "len=%u family=%d", len,
       ss.ss_family);
    fact("SO_TYPE unix", "%d", geti(sv[0], SOL_SOCKET, SO_TYPE));
    R("connect unix socket to inet address",
      connect(sv[0], (struct sockaddr *)&(struct sockaddr_in){.sin_family = AF_INET}, sizeof(struct sockaddr_in)));
    R("listen connected unix socket", listen(sv[0], 1));
    close(sv[0]);
    close(sv[1]);

    // An inet socket passed over SCM_RIGHTS still works as one.
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    l = listener4();
    port = port_of(l);
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    ctl.h.cmsg_len = CMSG_LEN(sizeof(int));
    ctl.h.cmsg_level = SOL_SOCKET;
    ctl.h.cmsg_type = SCM_RIGHTS;
    memcpy(CMSG_DATA(&ctl.h), &l, sizeof l);
    struct iovec iov = {"F", 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof ctl};
    R("sendmsg SCM_RIGHTS inet listener over unix", sendmsg(sv[0], &m, 0));
    close(l);
    char one;
    struct iovec riov = {&one, 1};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } rctl;
    struct msghdr rm = {.msg_iov = &riov, .msg_iovlen = 1, .msg_control = &rctl, .msg_controllen = sizeof rctl};
    R("recvmsg SCM_RIGHTS", recvmsg(sv[1], &rm, 0));
    int got = -1;
    memcpy(&got, CMSG_DATA(&rctl.h), sizeof got);
    fact("passed listener getsockname", "%s", port_of(got) == port ? "match" : "differ");
    c = connect4(port);
    a = RFD("accept on passed listener", accept(got, NULL, NULL));
    close(a);
    close(c);
    close(got);
    close(sv[0]);
    close(sv[1]);

    // fork: the child uses the inherited socket.
    l = listener4();
    port = port_of(l);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = accept(l, NULL, NULL);
        write(fd, "child", 5);
        _exit(fd >= 0 ? 0 : 1);
    }
    close(l);
    c = connect4(port);
    char buf[16] = {0};
    readable(c, 5000);
    RX("read from forked child's accepted socket", read(c, buf, sizeof buf), "data=%s", buf);
    int status;
    waitpid(pid, &status, 0);
    fact("forked child exit", "%d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    close(c);
}


// Reads an int option; prints "len=<n> v=<value>" or the errno.
static void opt_fact(const char *name, int fd, int level, int opt) {
    int v = -12345;
    socklen_t len = sizeof v;
    errno = 0;
    long r = getsockopt(fd, level, opt, &v, &len);
    rep(name, r, errno, 0, r < 0 ? "" : "len=%u v=%d", len, v);
}

static void set_then_get(const char *name, int fd, int level, int opt, int v) {
    char label[160];
    snprintf(label, sizeof label, "set %s %d", name, v);
    R(label, seti(fd, level, opt, v));
    snprintf(label, sizeof label, "get %s after %d", name, v);
    opt_fact(label, fd, level, opt);
}

// Blocks in a 1-byte send on fd; the parent raises SO_SNDBUF meanwhile.
static void *send_one(void *arg) {
    char b = 'x';
    long r = send(*(int *)arg, &b, 1, 0);
    return (void *)r;
}

// Options Linux accepts, stores and reads back (with its own rounding and
// limits), timeouts below zero, and send-buffer growth waking a writer.
static void section_options(void) {
    int t = socket(AF_INET, SOCK_STREAM, 0);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct {
        const char *name;
        int opt;
    } tcp_defaults[] = {
        {"TCP_SYNCNT", TCP_SYNCNT},         {"TCP_LINGER2", TCP_LINGER2},
        {"TCP_QUICKACK", TCP_QUICKACK},     {"TCP_MAXSEG", TCP_MAXSEG},
        {"TCP_DEFER_ACCEPT", TCP_DEFER_ACCEPT}, {"TCP_WINDOW_CLAMP", TCP_WINDOW_CLAMP},
        {"TCP_USER_TIMEOUT", TCP_USER_TIMEOUT}, {"TCP_INQ", TCP_INQ},
        {"TCP_CORK", TCP_CORK},
    };
    char label[160];
    for (size_t i = 0; i < sizeof tcp_defaults / sizeof tcp_defaults[0]; i++) {
        snprintf(label, sizeof label, "default %s", tcp_defaults[i].name);
        opt_fact(label, t, IPPROTO_TCP, tcp_defaults[i].opt);
    }
    opt_fact("default IP_MTU_DISCOVER tcp", t, IPPROTO_IP, IP_MTU_DISCOVER);
    opt_fact("default IP_MULTICAST_TTL tcp", t, IPPROTO_IP, IP_MULTICAST_TTL);
    opt_fact("default IP_MULTICAST_LOOP tcp", t, IPPROTO_IP, IP_MULTICAST_LOOP);
    opt_fact("default IP_MULTICAST_TTL udp", u, IPPROTO_IP, IP_MULTICAST_TTL);
    opt_fact("default IP_RECVTTL udp", u, IPPROTO_IP, IP_RECVTTL);
    opt_fact("default SO_NO_CHECK udp", u, SOL_SOCKET, SO_NO_CHECK);
    opt_fact("default SO_TIMESTAMP udp", u, SOL_SOCKET, SO_TIMESTAMP);
    opt_fact("default SO_TIMESTAMPNS udp", u, SOL_SOCKET, SO_TIMESTAMPNS);

    int syncnt[] = {0, -1, 1, 20, 255, 256};
    for (size_t i = 0; i < 6; i++)
        set_then_get("TCP_SYNCNT", t, IPPROTO_TCP, TCP_SYNCNT, syncnt[i]);
    int linger2[] = {-1234, 0, 59, 121, 30};
    for (size_t i = 0; i < 5; i++)
        set_then_get("TCP_LINGER2", t, IPPROTO_TCP, TCP_LINGER2, linger2[i]);
    int defer[] = {-1, 0, 1, 5, 100};
    for (size_t i = 0; i < 5; i++)
        set_then_get("TCP_DEFER_ACCEPT", t, IPPROTO_TCP, TCP_DEFER_ACCEPT, defer[i]);
    int user[] = {-10, 0, 100};
    for (size_t i = 0; i < 3; i++)
        set_then_get("TCP_USER_TIMEOUT", t, IPPROTO_TCP, TCP_USER_TIMEOUT, user[i]);
    int mss[] = {10, 75000, 87, 88, 1000, 0};
    for (size_t i = 0; i < 6; i++)
        set_then_get("TCP_MAXSEG", t, IPPROTO_TCP, TCP_MAXSEG, mss[i]);
    int quick[] = {0, 1, 2, 3};
    for (size_t i = 0; i < 4; i++)
        set_then_get("TCP_QUICKACK", t, IPPROTO_TCP, TCP_QUICKACK, quick[i]);
    int inq[] = {1, 0, 2, -1};
    for (size_t i = 0; i < 4; i++)
        set_then_get("TCP_INQ", t, IPPROTO_TCP, TCP_INQ, inq[i]);
    int cork[] = {5, 0};
    for (size_t i = 0; i < 2; i++)
        set_then_get("TCP_CORK", t, IPPROTO_TCP, TCP_CORK, cork[i]);
    int pmtu[] = {IP_PMTUDISC_DONT, IP_PMTUDISC_DO, IP_PMTUDISC_PROBE, 5, 6, 99, -1};
    for (size_t i = 0; i < 7; i++)
        set_then_get("IP_MTU_DISCOVER", t, IPPROTO_IP, IP_MTU_DISCOVER, pmtu[i]);
    int mttl[] = {-1, 0, 7, 256, -2};
    for (size_t i = 0; i < 5; i++)
        set_then_get("IP_MULTICAST_TTL", u, IPPROTO_IP, IP_MULTICAST_TTL, mttl[i]);
    int mloop[] = {0, 5};
    for (size_t i = 0; i < 2; i++)
        set_then_get("IP_MULTICAST_LOOP", u, IPPROTO_IP, IP_MULTICAST_LOOP, mloop[i]);
    set_then_get("IP_RECVTTL", u, IPPROTO_IP, IP_RECVTTL, 3);
    set_then_get("SO_NO_CHECK", u, SOL_SOCKET, SO_NO_CHECK, 4);
    set_then_get("SO_TIMESTAMP", u, SOL_SOCKET, SO_TIMESTAMP, 6);
    // Since Linux 6.16 SO_PASSCRED is for AF_UNIX and netlink only; the
    // sandbox answers as 6.16 does, so older kernels are not compared.
    struct utsname un;
    int major = 0, minor = 0;
    if (uname(&un) == 0)
        sscanf(un.release, "%d.%d", &major, &minor);
    if (major > 6 || (major == 6 && minor >= 16)) {
        opt_fact("default SO_PASSCRED tcp", t, SOL_SOCKET, SO_PASSCRED);
        set_then_get("SO_PASSCRED tcp", t, SOL_SOCKET, SO_PASSCRED, 9);
    }

    // Window clamp: 0 is taken on a closed socket only; small values are
    // raised to half the smallest receive buffer.
    seti(t, SOL_SOCKET, SO_RCVBUF, 0);
    int min_rcvbuf = geti(t, SOL_SOCKET, SO_RCVBUF);
    fact("SO_RCVBUF after 0", "%d", min_rcvbuf);
    set_then_get("TCP_WINDOW_CLAMP", t, IPPROTO_TCP, TCP_WINDOW_CLAMP, 0);
    set_then_get("TCP_WINDOW_CLAMP", t, IPPROTO_TCP, TCP_WINDOW_CLAMP, 10);
    set_then_get("TCP_WINDOW_CLAMP", t, IPPROTO_TCP, TCP_WINDOW_CLAMP, 5000);
    set_then_get("TCP_WINDOW_CLAMP", t, IPPROTO_TCP, TCP_WINDOW_CLAMP, -3);

    // Congestion control: known names are taken, others are ENOENT; reads
    // give at most 16 bytes.
    const char *ccs[] = {"reno", "cubic", "no_such_cc"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(label, sizeof label, "set TCP_CONGESTION %s", ccs[i]);
        R(label, setsockopt(t, IPPROTO_TCP, TCP_CONGESTION, ccs[i], strlen(ccs[i])));
        char got[24];
        memset(got, '#', sizeof got);
        socklen_t len = sizeof got;
        snprintf(label, sizeof label, "get TCP_CONGESTION after %s", ccs[i]);
        RX(label, getsockopt(t, IPPROTO_TCP, TCP_CONGESTION, got, &len), "len=%u name=%s tail=%d",
           len, got, got[15]);
    }
    char small[3];
    socklen_t slen = sizeof small;
    RX("get TCP_CONGESTION len 3", getsockopt(t, IPPROTO_TCP, TCP_CONGESTION, small, &slen),
       "len=%u head=%.3s", slen, small);

    // SO_LINGER: turning it off keeps the time that was set.
    struct linger lg = {1, 5}, got;
    socklen_t glen = sizeof got;
    R("set SO_LINGER on 5", setsockopt(t, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    lg.l_onoff = 0;
    lg.l_linger = 9;
    R("set SO_LINGER off 9", setsockopt(t, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    RX("get SO_LINGER after off", getsockopt(t, SOL_SOCKET, SO_LINGER, &got, &glen),
       "onoff=%d linger=%d", got.l_onoff, got.l_linger);
    lg.l_onoff = 7;
    lg.l_linger = 3;
    R("set SO_LINGER on(7) 3", setsockopt(t, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    glen = sizeof got;
    RX("get SO_LINGER after on(7)", getsockopt(t, SOL_SOCKET, SO_LINGER, &got, &glen),
       "onoff=%d linger=%d", got.l_onoff, got.l_linger);
    close(t);
    close(u);

    // An accepted socket inherits its listener's options.
    int l = listener4();
    seti(l, IPPROTO_TCP, TCP_USER_TIMEOUT, 1234);
    seti(l, IPPROTO_TCP, TCP_LINGER2, 33);
    seti(l, IPPROTO_TCP, TCP_SYNCNT, 9);
    int lc = connect4(port_of(l));
    int la = accept(l, NULL, NULL);
    opt_fact("accepted TCP_USER_TIMEOUT from listener", la, IPPROTO_TCP, TCP_USER_TIMEOUT);
    opt_fact("accepted TCP_LINGER2 from listener", la, IPPROTO_TCP, TCP_LINGER2);
    opt_fact("accepted TCP_SYNCNT from listener", la, IPPROTO_TCP, TCP_SYNCNT);
    close(la);
    close(lc);
    close(l);

    // A negative receive or send timeout gives up at once, and reads back 0.
    int c, s;
    tcp_pair(&c, &s);
    struct timeval neg = {.tv_sec = -1, .tv_usec = 0}, tv;
    R("set SO_RCVTIMEO -1s", setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &neg, sizeof neg));
    socklen_t tlen = sizeof tv;
    RX("get SO_RCVTIMEO after -1s", getsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, &tlen),
       "%ld.%06ld", (long)tv.tv_sec, (long)tv.tv_usec);
    char buf[16];
    R("read with SO_RCVTIMEO -1s", read(s, buf, sizeof buf));
    R("recv with SO_RCVTIMEO -1s", recv(s, buf, sizeof buf, 0));
    struct iovec iov = {buf, sizeof buf};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    R("recvmsg with SO_RCVTIMEO -1s", recvmsg(s, &mh, 0));
    int ud = udp4_bound();
    R("set SO_RCVTIMEO -1s udp", setsockopt(ud, SOL_SOCKET, SO_RCVTIMEO, &neg, sizeof neg));
    struct sockaddr_in from;
    socklen_t flen = sizeof from;
    R("recvfrom udp with SO_RCVTIMEO -1s", recvfrom(ud, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen));
    struct mmsghdr mm = {.msg_hdr = {.msg_iov = &iov, .msg_iovlen = 1}};
    struct timespec bad_ts = {-1, -1}, bad_ns = {0, 1000000000};
    R("recvmmsg udp timeout {-1,-1}", recvmmsg(ud, &mm, 1, 0, &bad_ts));
    R("recvmmsg udp timeout {0,1e9}", recvmmsg(ud, &mm, 1, 0, &bad_ns));
    close(ud);

    // TCP_CORK holds a small write until it is cleared.
    R("set TCP_CORK on a connection", seti(c, IPPROTO_TCP, TCP_CORK, 1));
    R("corked write", write(c, "abc", 3));
    usleep(50000);
    R("recv while corked", recv(s, buf, sizeof buf, MSG_DONTWAIT));
    R("clear TCP_CORK", seti(c, IPPROTO_TCP, TCP_CORK, 0));
    R("readable once uncorked", readable(s, 5000));
    R("recv once uncorked", recv(s, buf, sizeof buf, MSG_DONTWAIT));

    // SO_SNDBUF and SO_RCVBUF read their size unsigned: -1 is the most.
    int most = 1 << 30, minus = -1;
    seti(c, SOL_SOCKET, SO_SNDBUF, most);
    most = geti(c, SOL_SOCKET, SO_SNDBUF);
    seti(c, SOL_SOCKET, SO_SNDBUF, minus);
    fact("SO_SNDBUF -1 is the largest", "%d", geti(c, SOL_SOCKET, SO_SNDBUF) == most);
    most = 1 << 30;
    seti(c, SOL_SOCKET, SO_RCVBUF, most);
    most = geti(c, SOL_SOCKET, SO_RCVBUF);
    seti(c, SOL_SOCKET, SO_RCVBUF, minus);
    fact("SO_RCVBUF -1 is the largest", "%d", geti(c, SOL_SOCKET, SO_RCVBUF) == most);

    // Fill the send side with a small buffer, then grow it: a blocked
    // writer goes on.
    int small_buf = 4096;
    seti(c, SOL_SOCKET, SO_SNDBUF, small_buf);
    fcntl(c, F_SETFL, O_NONBLOCK);
    static char chunk[65536];
    long total = 0;
    for (int i = 0; i < 100000; i++) {
        long n = send(c, chunk, sizeof chunk, 0);
        if (n < 0) {
            if (errno != EAGAIN)
                break;
            usleep(10000);
            if ((n = send(c, chunk, sizeof chunk, 0)) < 0)
                break;
        }
        total += n;
    }
    fact("nonblocking send fills up", "%s", errno == EAGAIN && total > 0 ? "EAGAIN" : en(errno));
    fcntl(c, F_SETFL, 0);
    pthread_t th;
    pthread_create(&th, NULL, send_one, &c);
    usleep(200000);
    int big = 4 << 20;
    R("raise SO_SNDBUF while a send blocks", seti(c, SOL_SOCKET, SO_SNDBUF, big));
    void *ret;
    current = "blocked send after SO_SNDBUF grows";
    pthread_join(th, &ret);
    fact("blocked send after SO_SNDBUF grows", "%ld", (long)ret);
    close(c);
    close(s);
}


// Resets seen by an accepted socket that made no trapped call since
// accept: the peer closes with data it never read.
static void section_reset(void) {
    for (int v6 = 0; v6 < 2; v6++) {
        int l = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = a4("127.0.0.1", 0);
        struct sockaddr_in6 b = a6("::1", 0);
        struct sockaddr *addr = v6 ? (struct sockaddr *)&b : (struct sockaddr *)&a;
        socklen_t alen = v6 ? sizeof b : sizeof a;
        if (bind(l, addr, alen) < 0 || listen(l, 4) < 0) {
            perror("section_reset listener");
            exit(2);
        }
        if (v6)
            b.sin6_port = htons(port_of(l));
        else
            a.sin_port = htons(port_of(l));
        int c = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
        if (connect(c, addr, alen) < 0) {
            perror("section_reset connect");
            exit(2);
        }
        int s = accept(l, NULL, NULL);
        close(l);
        char buf[10] = {0};
        const char *fam = v6 ? "v6" : "v4";
        char label[96];
        snprintf(label, sizeof label, "%s accepted end writes", fam);
        R(label, write(s, buf, sizeof buf));
        snprintf(label, sizeof label, "%s client sees the data", fam);
        R(label, readable(c, 5000));
        close(c);
        struct pollfd p = {.fd = s, .events = POLLIN};
        snprintf(label, sizeof label, "%s accepted end polls after the reset", fam);
        RX(label, poll(&p, 1, 5000), "revents=%#x", p.revents & (POLLIN | POLLHUP | POLLERR));
        snprintf(label, sizeof label, "%s accepted end reads after the reset", fam);
        R(label, read(s, buf, sizeof buf));
        snprintf(label, sizeof label, "%s accepted end reads again", fam);
        R(label, read(s, buf, sizeof buf));
        close(s);
    }
}


// recv with MSG_TRUNC on TCP: bytes are dropped (or, with MSG_PEEK,
// counted) and none are copied.
static void section_stream_trunc(void) {
    int c, s;
    tcp_pair(&c, &s);
    char out[512], in[1024];
    for (int i = 0; i < 512; i++)
        out[i] = (char)(i * 7 + 1);
    write(c, out, sizeof out);
    readable(s, 5000);
    usleep(100000);
    memset(in, 0, sizeof in);
    RX("recv MSG_TRUNC|MSG_PEEK 100", recv(s, in, 100, MSG_TRUNC | MSG_PEEK), "untouched=%d",
       in[0] == 0 && in[99] == 0);
    RX("recv MSG_TRUNC 100", recv(s, in, 100, MSG_TRUNC), "untouched=%d", in[0] == 0 && in[99] == 0);
    RX("recv after MSG_TRUNC 100", recv(s, in, 10, 0), "from byte 100=%d", memcmp(in, out + 100, 10) == 0);
    R("recv MSG_TRUNC NULL 1000", recv(s, NULL, 1000, MSG_TRUNC));
    R("recv MSG_TRUNC|MSG_DONTWAIT empty", recv(s, in, 10, MSG_TRUNC | MSG_DONTWAIT));
    R("recv MSG_TRUNC|MSG_DONTWAIT len 0 empty", recv(s, in, 0, MSG_TRUNC | MSG_DONTWAIT));
    write(c, out, 5);
    readable(s, 5000);
    usleep(100000);
    R("recv MSG_TRUNC len 0 with data", recv(s, in, 0, MSG_TRUNC));
    close(c);
    R("recv MSG_TRUNC at end of file", recv(s, in, 10, MSG_TRUNC));
    close(s);
}

static const struct {
    const char *name;
    void (*run)(void);
} sections[] = {
    {"socket", section_socket}, {"bind", section_bind},       {"listen", section_listen},
    {"connect", section_connect}, {"accept", section_accept}, {"names", section_names},
    {"sockopt", section_sockopt}, {"shutdown", section_shutdown}, {"sendto", section_sendto},
    {"msg", section_msg},         {"ioctl", section_ioctl},   {"netlink", section_netlink},
    {"fds", section_fds},         {"options", section_options},
    {"reset", section_reset},     {"stream_trunc", section_stream_trunc},
};

// Usage: errno_probe [SECTION...] (default: all, in order).
int main(int argc, char **argv) {
    signal(SIGALRM, on_alarm);
    signal(SIGPIPE, SIG_IGN);
    alarm(10);
    setvbuf(stdout, NULL, _IOLBF, 0);
    PROTNONE = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    READONLY = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *two = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(two + 4096, 4096, PROT_NONE);
    STRADDLE = two + 4096 - 8;
    struct sockaddr_in lo = a4("127.0.0.1", 0);
    memcpy(STRADDLE, &lo, 8);
    file_fd = open("/proc/self/exe", O_RDONLY);
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        int wanted = argc < 2;
        for (int k = 1; k < argc; k++)
            wanted |= strcmp(argv[k], sections[i].name) == 0;
        if (wanted)
            sections[i].run();
    }
    printf("END\n");
    return 0;
}
