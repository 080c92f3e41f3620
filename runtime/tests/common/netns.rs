//! Small private worlds of network namespaces for the tests that need a
//! peer or a device: each is made by its constructor and removed by `Drop`,
//! also when the test panics, together with every process still in it.
//! Nothing here touches the host's own interfaces or any outside address.
//!
//! - [`Topology`]: namespaces A (where `smolvisor` runs: the sandbox's
//!   "host") and B ("outside", where the peers live), joined by a veth pair
//!   on 10.201.N.0/24. Used by the nat and capture tests.
//! - [`TwoPeers`]: namespace A joined to B and to C by a veth each, with a
//!   default route, an on-link route and a gateway route: the several
//!   interfaces of `--network sandbox`.
//! - [`TapNet`]: one namespace holding a TAP device on 10.211.N.0/24 and an
//!   address 10.212.N.1 beyond it, for `--network tap:NAME`.
//!
//! Each is a [`World`]: a sandbox and a peer. Also the servers the tests run
//! in them ([`http_server`], [`serve_from_peer`], [`tcp_sink`]), the bulk
//! transfers between the two ([`bulk_to_peer`], [`bulk_from_peer`]) and
//! the checks of what they print ([`assert_fetched`], [`assert_same_stream`]).

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{Guest, Mode, Outcome, Running, ScratchDir};

/// Runs `ip ARGS`, panicking with its stderr if it fails.
pub fn ip(args: &[&str]) {
    ip_out(args);
}

/// Runs `ip ARGS` and returns its stdout, panicking with its stderr if it fails.
pub fn ip_out(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("ip prints UTF-8")
}

/// Makes namespace `ns` with its `lo` up.
fn add_namespace(ns: &str) {
    ip(&["netns", "add", ns]);
    ip(&["-n", ns, "link", "set", "lo", "up"]);
}

/// Joins `ns`'s new interface `dev` (ADDR/24, up) to a `veth0` (PEER_ADDR/24,
/// up) in `peer`. Made inside `ns` and moved: nothing appears on the host.
fn add_veth(ns: &str, dev: &str, addr: &str, peer: &str, peer_addr: &str) {
    ip(&[
        "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", "veth0", "netns", peer,
    ]);
    for (ns, dev, addr) in [(ns, dev, addr), (peer, "veth0", peer_addr)] {
        ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }
}

/// Gives `ns`'s `lo` the address ADDR/32.
fn add_to_lo(ns: &str, addr: &str) {
    ip(&["-n", ns, "addr", "add", &format!("{addr}/32"), "dev", "lo"]);
}

/// A unique name prefix and a subnet byte N for one world. The namespaces
/// are private, so any N works; a varied one keeps concurrent test
/// processes' logs and captures apart.
fn next_world() -> (String, u8) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let k = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() as usize;
    let n = u8::try_from((pid * 7 + k) % 200 + 20).expect("N < 256");
    (format!("{pid}-{k}"), n)
}

/// Kills every process in the namespace `ns` (only a test's own processes
/// live there: a server left behind by a panic would keep it alive), then
/// deletes it.
fn remove_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// A world with a sandbox and one peer it reaches: what the tests that
/// move data between the two share, whatever the network mode.
pub trait World {
    /// The peer's address, as the sandbox reaches it.
    fn peer_ip(&self) -> String;

    /// `cmd` run natively where the peer lives.
    fn peer(&self, cmd: Guest) -> Guest;

    /// `guest` under `smolvisor do` with this world's network and `extra`.
    fn sandbox(&self, extra: &[&str], guest: Guest) -> Guest;
}

/// Namespaces A and B and the veth between them; removed on drop.
pub struct Topology {
    /// Where `smolvisor` runs.
    pub a: String,
    /// The peer ("outside").
    pub b: String,
    /// The third byte of 10.201.N.0/24.
    pub n: u8,
}

impl Topology {
    pub fn new() -> Self {
        let (id, n) = next_world();
        let net = Topology {
            a: format!("smv-nat-{id}-a"),
            b: format!("smv-nat-{id}-b"),
            n,
        };
        // From here on, Drop removes whatever was made.
        add_namespace(&net.a);
        add_namespace(&net.b);
        add_veth(&net.a, "veth0", &net.a_ip(), &net.b, &net.b_ip());
        net
    }

    /// A's address on the veth.
    pub fn a_ip(&self) -> String {
        format!("10.201.{}.1", self.n)
    }

    /// B's address on the veth.
    pub fn b_ip(&self) -> String {
        format!("10.201.{}.2", self.n)
    }

    /// An address on the veth's subnet that nothing answers for.
    pub fn silent_ip(&self) -> String {
        format!("10.201.{}.77", self.n)
    }

    /// `ip netns exec A` bind-mounts this over /etc/resolv.conf.
    pub fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.a)
    }

    /// Makes `nameserver IP` A's resolver (and so the DNS forwarder's upstream).
    pub fn set_resolver(&self, ip: &str) {
        fs::create_dir_all(self.etc_dir()).expect("create /etc/netns/A");
        fs::write(
            self.etc_dir().join("resolv.conf"),
            format!("nameserver {ip}\n"),
        )
        .expect("write /etc/netns/A/resolv.conf");
    }

    /// `cmd` run natively in A ("the host").
    pub fn in_a(&self, cmd: Guest) -> Guest {
        cmd.mode(Mode::Native).netns(&self.a)
    }

    /// `cmd` run natively in B (the peer).
    pub fn in_b(&self, cmd: Guest) -> Guest {
        cmd.mode(Mode::Native).netns(&self.b)
    }
}

/// The sandbox runs `--network nat` in A; the peer is B.
impl World for Topology {
    fn peer_ip(&self) -> String {
        self.b_ip()
    }

    fn peer(&self, cmd: Guest) -> Guest {
        self.in_b(cmd)
    }

    /// `guest` under `ip netns exec A smolvisor do --network nat EXTRA... --`.
    fn sandbox(&self, extra: &[&str], guest: Guest) -> Guest {
        let mut args = vec!["--network", "nat"];
        args.extend_from_slice(extra);
        guest.mode(Mode::Sandbox).netns(&self.a).do_args(&args)
    }
}

/// A [`Topology`] whose sandbox takes A's interfaces over (`--network
/// sandbox`) instead of running the nat gateway; the peer is B.
pub struct TakeOver<'a>(pub &'a Topology);

impl World for TakeOver<'_> {
    fn peer_ip(&self) -> String {
        self.0.b_ip()
    }

    fn peer(&self, cmd: Guest) -> Guest {
        self.0.in_b(cmd)
    }

    fn sandbox(&self, extra: &[&str], guest: Guest) -> Guest {
        sandboxed(&self.0.a, extra, guest)
    }
}

/// A [`Topology`] whose sandbox relays its flows through sockets made in A
/// (`--network relay --netns A`, smolvisor itself started in the caller's
/// namespace); the peer is B.
pub struct Relayed<'a>(pub &'a Topology);

impl World for Relayed<'_> {
    fn peer_ip(&self) -> String {
        self.0.b_ip()
    }

    fn peer(&self, cmd: Guest) -> Guest {
        self.0.in_b(cmd)
    }

    fn sandbox(&self, extra: &[&str], guest: Guest) -> Guest {
        relayed(&self.0.a, extra, guest)
    }
}

/// `guest` under `smolvisor do --network relay --netns /run/netns/NS
/// EXTRA... --`, started in the caller's own namespace.
pub fn relayed(ns: &str, extra: &[&str], guest: Guest) -> Guest {
    let path = format!("/run/netns/{ns}");
    let mut args = vec!["--network", "relay", "--netns", &path];
    args.extend_from_slice(extra);
    guest.mode(Mode::Sandbox).do_args(&args)
}

/// `guest` under `ip netns exec NS smolvisor do --network sandbox --netns
/// /run/netns/NS EXTRA... --`.
pub fn sandboxed(ns: &str, extra: &[&str], guest: Guest) -> Guest {
    let path = format!("/run/netns/{ns}");
    let mut args = vec!["--network", "sandbox", "--netns", &path];
    args.extend_from_slice(extra);
    guest.mode(Mode::Sandbox).netns(ns).do_args(&args)
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            remove_namespace(ns);
        }
        let _ = fs::remove_dir_all(self.etc_dir());
    }
}

/// Namespace A (where `smolvisor` runs) with two veths, each a subnet of
/// its own, and the routes of a host with several interfaces:
///
/// - `vethb` to B: A 10.201.N.1/24, B 10.201.N.2/24; A's default route
///   goes via B, which also holds 10.234.N.1 on its `lo` (reached only
///   through that default route).
/// - `vethc` to C: A 10.231.N.1/24, C 10.231.N.2/24; A has the on-link
///   route `10.231.0.0/16 dev vethc` (wider than its subnet, holding its
///   address) to reach 10.231.N+1.1 on C's `lo`, and the gateway route
///   `10.233.N.0/24 via 10.231.N.2` to reach 10.233.N.1 on C's `lo`.
///
/// The peers' ends are named `veth0`. Removed on drop.
pub struct TwoPeers {
    pub a: String,
    pub b: String,
    pub c: String,
    /// The third byte of the subnets (N < 255, so N+1 is one too).
    pub n: u8,
}

impl TwoPeers {
    pub fn new() -> Self {
        let (id, n) = next_world();
        let net = TwoPeers {
            a: format!("smv-two-{id}-a"),
            b: format!("smv-two-{id}-b"),
            c: format!("smv-two-{id}-c"),
            n,
        };
        // From here on, Drop removes whatever was made.
        for ns in [&net.a, &net.b, &net.c] {
            add_namespace(ns);
        }
        add_veth(&net.a, "vethb", &net.a_ip_b(), &net.b, &net.b_ip());
        add_veth(&net.a, "vethc", &net.a_ip_c(), &net.c, &net.c_ip());
        add_to_lo(&net.b, &net.b_far_ip());
        for far in [net.c_onlink_ip(), net.c_gateway_ip()] {
            add_to_lo(&net.c, &far);
        }
        ip(&["-n", &net.a, "route", "add", "default", "via", &net.b_ip()]);
        ip(&[
            "-n",
            &net.a,
            "route",
            "add",
            "10.231.0.0/16",
            "dev",
            "vethc",
        ]);
        let beyond = format!("10.233.{}.0/24", net.n);
        ip(&["-n", &net.a, "route", "add", &beyond, "via", &net.c_ip()]);
        net
    }

    /// A's address on `vethb`.
    pub fn a_ip_b(&self) -> String {
        format!("10.201.{}.1", self.n)
    }

    /// A's address on `vethc`.
    pub fn a_ip_c(&self) -> String {
        format!("10.231.{}.1", self.n)
    }

    /// B's address on the veth, A's default gateway.
    pub fn b_ip(&self) -> String {
        format!("10.201.{}.2", self.n)
    }

    /// B's address on `lo`, beyond every subnet of A: reached by the default route.
    pub fn b_far_ip(&self) -> String {
        format!("10.234.{}.1", self.n)
    }

    /// C's address on the veth, A's gateway to 10.233.N.0/24.
    pub fn c_ip(&self) -> String {
        format!("10.231.{}.2", self.n)
    }

    /// C's address on `lo` inside 10.231.0.0/16 but outside A's /24:
    /// reached by the on-link route.
    pub fn c_onlink_ip(&self) -> String {
        format!("10.231.{}.1", self.n + 1)
    }

    /// C's address on `lo` reached by the gateway route.
    pub fn c_gateway_ip(&self) -> String {
        format!("10.233.{}.1", self.n)
    }

    /// `cmd` run natively in B.
    pub fn in_b(&self, cmd: Guest) -> Guest {
        cmd.mode(Mode::Native).netns(&self.b)
    }

    /// `cmd` run natively in C.
    pub fn in_c(&self, cmd: Guest) -> Guest {
        cmd.mode(Mode::Native).netns(&self.c)
    }
}

impl Drop for TwoPeers {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b, &self.c] {
            remove_namespace(ns);
        }
    }
}

/// A namespace with a TAP device `tap0` (10.211.N.1/24, up) for the guest's
/// NIC to ride, and 10.212.N.1 on its `lo`: beyond the TAP's subnet, so the
/// guest reaches it only through a gateway. Removed on drop.
pub struct TapNet {
    /// Where `smolvisor` and the peers run.
    pub ns: String,
    /// The TAP device's name.
    pub tap: String,
    /// The third byte of 10.211.N.0/24 and 10.212.N.1.
    pub n: u8,
}

impl TapNet {
    pub fn new() -> Self {
        let (id, n) = next_world();
        let net = TapNet {
            ns: format!("smv-tap-{id}"),
            tap: "tap0".to_owned(),
            n,
        };
        // From here on, Drop removes whatever was made.
        add_namespace(&net.ns);
        ip(&[
            "-n", &net.ns, "tuntap", "add", "dev", &net.tap, "mode", "tap",
        ]);
        let host = format!("{}/24", net.host_ip());
        ip(&["-n", &net.ns, "addr", "add", &host, "dev", &net.tap]);
        ip(&["-n", &net.ns, "link", "set", &net.tap, "up"]);
        add_to_lo(&net.ns, &net.far_ip());
        net
    }

    /// The namespace's address on the TAP.
    pub fn host_ip(&self) -> String {
        format!("10.211.{}.1", self.n)
    }

    /// The guest's address on the TAP's subnet.
    pub fn guest_ip(&self) -> String {
        format!("10.211.{}.2", self.n)
    }

    /// An address of the namespace outside the TAP's subnet.
    pub fn far_ip(&self) -> String {
        format!("10.212.{}.1", self.n)
    }

    /// `cmd` run natively in the namespace.
    pub fn native(&self, cmd: Guest) -> Guest {
        cmd.mode(Mode::Native).netns(&self.ns)
    }
}

/// The peer is the namespace itself, on the TAP's far end.
impl World for TapNet {
    fn peer_ip(&self) -> String {
        self.host_ip()
    }

    fn peer(&self, cmd: Guest) -> Guest {
        self.native(cmd)
    }

    /// `guest` under `ip netns exec NS smolvisor do --network tap:tap0
    /// --address GUEST/24 EXTRA... --`.
    fn sandbox(&self, extra: &[&str], guest: Guest) -> Guest {
        let network = format!("tap:{}", self.tap);
        let address = format!("{}/24", self.guest_ip());
        let mut args = vec!["--network", &network, "--address", &address];
        args.extend_from_slice(extra);
        guest.mode(Mode::Sandbox).netns(&self.ns).do_args(&args)
    }
}

impl Drop for TapNet {
    fn drop(&mut self) {
        // A persistent TAP is not tied to a process: delete it explicitly.
        let _ = Command::new("ip")
            .args(["-n", &self.ns, "link", "del", &self.tap])
            .status();
        remove_namespace(&self.ns);
    }
}

/// A text file of about `len` bytes (text, so stdout compares as a string).
pub fn text_file(dir: &ScratchDir, name: &str, len: usize) -> String {
    let mut body = String::new();
    let mut i = 0;
    while body.len() < len {
        body.push_str(&format!("line {i:06} of {name}: the quick brown fox\n"));
        i += 1;
    }
    fs::write(dir.path().join(name), &body).expect("write served file");
    body
}

/// `python3 -m http.server` serving `dir` on ADDR:PORT, listening once it returns.
pub fn http_server(
    ns_cmd: impl Fn(Guest) -> Guest,
    addr: &str,
    port: u16,
    dir: &ScratchDir,
) -> Running {
    let port = port.to_string();
    let mut server = ns_cmd(Guest::new(&[
        "python3",
        "-u",
        "-m",
        "http.server",
        "--bind",
        addr,
        &port,
    ]))
    .cwd(dir.path())
    .deadline(Duration::from_secs(60))
    .spawn();
    // Printed after bind and listen.
    server.wait_for_line("Serving HTTP");
    server
}

/// The nat_peer.py line `sent|received N SHA` split into (N, SHA).
pub fn transfer(line: &str) -> (&str, &str) {
    let mut words = line.split_whitespace().skip(1);
    (
        words.next().expect("a byte count"),
        words.next().expect("a digest"),
    )
}

/// `curl URL` with a 10 s limit.
pub fn fetch(url: &str) -> Guest {
    Guest::new(&["curl", "-sS", "--max-time", "10", url])
}

/// Panics unless `out` succeeded and printed exactly `body`.
pub fn assert_fetched(out: &Outcome, body: &str) {
    out.assert_success();
    assert!(
        out.stdout == body,
        "the body differs ({} bytes, expected {})\n{out}",
        out.stdout.len(),
        body.len()
    );
}

/// A text file served by `python3 -m http.server` in the peer.
pub struct PeerFile {
    pub body: String,
    /// `http://PEER:8080/NAME`.
    pub url: String,
    pub server: Running,
    // After `server`: the directory goes once the server is stopped.
    _dir: ScratchDir,
}

/// Serves a text file `name` of about `len` bytes from the peer's address,
/// port 8080; listening once it returns.
pub fn serve_from_peer(net: &impl World, name: &str, len: usize) -> PeerFile {
    let dir = ScratchDir::new("www");
    let body = text_file(&dir, name, len);
    let server = http_server(|g| net.peer(g), &net.peer_ip(), 8080, &dir);
    PeerFile {
        body,
        url: format!("http://{}:8080/{name}", net.peer_ip()),
        server,
        _dir: dir,
    }
}

/// Panics unless the log of `server` (`python3 -m http.server`) shows a
/// GET of `path` from `client`.
pub fn assert_logged_client(server: &Running, client: &str, path: &str) {
    let log = server.stderr_so_far();
    assert!(
        log.lines()
            .any(|l| l.starts_with(&format!("{client} - - ")) && l.contains(&format!("GET {path}"))),
        "the server's log does not show {client} getting {path}:\n{log}"
    );
}

/// nat_peer.py's `udp-echo` in the peer on its address and `port`, ready.
pub fn udp_echo(net: &impl World, port: &str) -> Running {
    let mut echo = net
        .peer(Guest::python(
            "nat_peer.py",
            &["udp-echo", &net.peer_ip(), port],
        ))
        .deadline(Duration::from_secs(60))
        .spawn();
    echo.wait_for_line("ready");
    echo
}

/// nat_peer.py's `tcp-sink` in the peer on its address and `port`, ready.
pub fn tcp_sink(net: &impl World, port: &str) -> Running {
    let mut sink = net
        .peer(Guest::python(
            "nat_peer.py",
            &["tcp-sink", &net.peer_ip(), port],
        ))
        .deadline(Duration::from_secs(60))
        .spawn();
    sink.wait_for_line("ready");
    sink
}

/// Sends `bytes` from the sandbox (with `extra` options) to a sink in the
/// peer on `port`; returns what the sender and the sink said.
pub fn bulk_to_peer(
    net: &impl World,
    extra: &[&str],
    port: &str,
    bytes: u64,
) -> (Outcome, Outcome) {
    let sink = tcp_sink(net, port);
    let sent = net
        .sandbox(
            extra,
            Guest::python(
                "nat_peer.py",
                &["tcp-send", &net.peer_ip(), port, &bytes.to_string()],
            ),
        )
        .deadline(Duration::from_secs(60))
        .run();
    (sent, sink.wait())
}

/// Has the sandbox take `bytes` from a source in the peer on `port`;
/// returns what the source and the receiver said.
pub fn bulk_from_peer(net: &impl World, port: &str, bytes: u64) -> (Outcome, Outcome) {
    let mut source = net
        .peer(Guest::python(
            "nat_peer.py",
            &["tcp-source", &net.peer_ip(), port, &bytes.to_string()],
        ))
        .deadline(Duration::from_secs(60))
        .spawn();
    source.wait_for_line("ready");
    let received = net
        .sandbox(
            &[],
            Guest::python("nat_peer.py", &["tcp-recv", &net.peer_ip(), port]),
        )
        .deadline(Duration::from_secs(60))
        .run();
    (source.wait(), received)
}

/// Panics unless both ends succeeded and report the same byte count,
/// `bytes`, and the same digest.
pub fn assert_same_stream(what: &str, sender: &Outcome, receiver: &Outcome, bytes: u64) {
    let sent = sender.stdout.lines().find(|l| l.starts_with("sent "));
    let received = receiver.stdout.lines().find(|l| l.starts_with("received "));
    let ok = match (sent, received) {
        (Some(s), Some(r)) => transfer(s) == transfer(r) && transfer(s).0 == bytes.to_string(),
        _ => false,
    };
    assert!(
        ok,
        "{what}: sent {sent:?}, received {received:?} (expected {bytes} bytes)\n\
         sender:\n{sender}\nreceiver:\n{receiver}"
    );
    sender.assert_success();
    receiver.assert_success();
}
