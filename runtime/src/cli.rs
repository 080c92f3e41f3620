//! The command line.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Parser, Subcommand};
use netstack::nat::Publish;

use crate::network::impair::ImpairSpec;

/// A network-centric container sandbox: every socket of the guest is served
/// by a user-space TCP/IP stack.
#[derive(Debug, Parser)]
#[command(name = "smolvisor", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options given before the command: runc's, which containerd's shim
/// passes, and smolvisor's own for OCI containers (daemon.json's
/// `runtimeArgs`; each also an annotation `dev.smolvisor.NAME`).
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Where containers' state lives, one directory per container.
    #[arg(long, value_name = "DIR", default_value = "/run/smolvisor")]
    pub root: PathBuf,
    /// Where errors and diagnostics go (besides standard error for errors).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// The --log file's format: runc's JSON lines (`level`, `msg`, `time`) or text.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Manage containers' cgroups through systemd.
    #[arg(long)]
    pub systemd_cgroup: bool,
    /// Log at debug level.
    #[arg(long)]
    pub debug: bool,
    /// Accepted for runc compatibility; smolvisor runs as root.
    #[arg(long, value_name = "BOOL", hide = true)]
    pub rootless: Option<String>,
    /// OCI containers' network: sandbox (the default: take over the
    /// container's interfaces), relay (the container's address stays on its
    /// interface; the guest's flows leave as sockets of the container's
    /// namespace) or none (loopback only).
    #[arg(long = "network", value_name = "MODE")]
    pub network: Option<OciNetwork>,
    /// OCI containers: capture every frame as pcapng to FILE; `%ID%` is
    /// replaced by the container's id.
    #[arg(long = "pcap-log", value_name = "FILE")]
    pub pcap_log: Option<String>,
    /// OCI containers: record every trapped system call to FILE (`%ID%` as above).
    #[arg(long = "debug-log", value_name = "FILE")]
    pub debug_log: Option<String>,
    /// OCI containers: impair the NICs' frames, as `do --impair` does.
    #[arg(
        long = "impair",
        value_name = "[NIC:]KEY=VALUE,...",
        value_delimiter = ';'
    )]
    pub impair: Vec<ImpairSpec>,
    /// OCI containers: the TCP buffers' memory limit, as `do --tcp-memory`.
    #[arg(long = "tcp-memory", value_name = "SIZE", value_parser = memory_size)]
    pub tcp_memory: Option<usize>,
}

/// A `--tcp-memory` size: bytes, or with kb, mb or gb; at least 64kb.
pub(crate) fn memory_size(v: &str) -> Result<usize, String> {
    let n = crate::network::impair::size(v)?;
    if n < 64 << 10 {
        return Err("at least 64kb".into());
    }
    Ok(n as usize)
}

/// The --log file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// An OCI container's network mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OciNetwork {
    /// Take over the interfaces of the container's network namespace.
    Sandbox,
    /// Relay the guest's flows through sockets of the container's network
    /// namespace, which keeps its addresses; the guest's listeners are
    /// mirrored there.
    Relay,
    /// Loopback only.
    None,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a sandbox (new namespaces, copy-on-write root file
    /// system, sockets served by the Sentry).
    Do(DoArgs),
    /// Create a container from an OCI bundle; `start` runs its process.
    Create(CreateArgs),
    /// Run the process of a created container.
    Start(IdArg),
    /// Print a container's state as JSON.
    State(IdArg),
    /// Send a signal to a container's init (or, with --all, every process).
    Kill(KillArgs),
    /// Remove a stopped container (any, with --force).
    Delete(DeleteArgs),
    /// Run one more process in a running container, in its sandbox.
    Exec(ExecArgs),
    /// List the processes of a container.
    Ps(PsArgs),
    /// List containers.
    List(ListArgs),
    /// Freeze every process of a container.
    Pause(IdArg),
    /// Thaw a paused container.
    Resume(IdArg),
    /// Change a container's resource limits.
    Update(UpdateArgs),
    /// What this runtime supports, as JSON.
    Features,
    /// Write a template config.json.
    Spec(SpecArgs),
    /// Create and start a container, wait for it, and delete it.
    Run(RunArgs),
    /// Register smolvisor as a Docker runtime in daemon.json.
    Install(InstallArgs),
    /// Print the seccomp filters smolvisor installs, the guest's and the
    /// Sentry's, as Markdown tables: each rule's call, condition, action
    /// and reason.
    Filters,
    /// Fuzz a server: run it sandboxed and feed it mutated client traffic
    /// through the netstack; crashes and hangs are written as pcapng
    /// reproducers.
    Fuzz(FuzzArgs),
    /// Play a reproducer written by `fuzz` into a fresh sandbox running
    /// the server; the exit status is 128+N if the server died by signal N.
    Replay(ReplayArgs),
    /// Inside a fuzzed sandbox: makes the coverage map, then runs the server.
    #[command(hide = true)]
    AflShim(AflShimArgs),
    /// The Sentry of one OCI container (started by `create`).
    #[command(hide = true)]
    SentryDaemon(SentryDaemonArgs),
    /// The Gofer of one `do` sandbox (started by `do`).
    #[command(hide = true)]
    Gofer,
}

#[derive(Debug, clap::Args)]
pub struct IdArg {
    /// The container's id.
    pub id: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// The bundle: the directory holding config.json.
    #[arg(short = 'b', long, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container's init pid there.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Send the terminal's master there (when process.terminal is set).
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Use MS_MOVE instead of pivot_root (a ramdisk root).
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility (no session keyring is made).
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Descriptors beyond stdio to pass on (3 onwards).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: i32,
    /// The container's id.
    pub id: String,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Return once the container runs instead of waiting for it.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep the stopped container (do not delete it).
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// Signal every process of the container.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// The container's id.
    pub id: String,
    /// The signal: a name (TERM, SIGTERM) or number.
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Kill a running container first.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// The container's id.
    pub id: String,
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The process to run, as the JSON of config.json's `process`.
    #[arg(short = 'p', long, value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Return once the process runs instead of waiting for it.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Write the process's pid there.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Send the terminal's master there.
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility (the process file says whether).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Working directory (without --process).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Environment variables, NAME=VALUE (without --process).
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Descriptors beyond stdio to pass on.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: i32,
    /// The container's id.
    pub id: String,
    /// The command (without --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// table (ps -ef's rows) or json (the pids).
    #[arg(short = 'f', long, default_value = "table")]
    pub format: String,
    /// The container's id.
    pub id: String,
    /// Options for ps (table format).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// table or json.
    #[arg(short = 'f', long, default_value = "table")]
    pub format: String,
    /// Only the ids.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// The new resources, as the JSON of config.json's `linux.resources`
    /// (`-` for standard input).
    #[arg(short = 'r', long, value_name = "FILE")]
    pub resources: Option<PathBuf>,
    /// Memory limit, in bytes.
    #[arg(long, value_name = "BYTES")]
    pub memory: Option<i64>,
    /// Memory plus swap limit, in bytes.
    #[arg(long, value_name = "BYTES")]
    pub memory_swap: Option<i64>,
    /// Most processes at once.
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<i64>,
    /// CPU shares.
    #[arg(long, value_name = "N")]
    pub cpu_share: Option<u64>,
    /// CPU CFS quota, in microseconds per period.
    #[arg(long, value_name = "US")]
    pub cpu_quota: Option<i64>,
    /// CPU CFS period, in microseconds.
    #[arg(long, value_name = "US")]
    pub cpu_period: Option<u64>,
    /// CPUs allowed, as a list (0-3,5).
    #[arg(long, value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// The container's id.
    pub id: String,
}

#[derive(Debug, clap::Args)]
pub struct SpecArgs {
    /// Where to write config.json.
    #[arg(short = 'b', long, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// Accepted for runc compatibility.
    #[arg(long)]
    pub rootless: bool,
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Docker's daemon configuration.
    #[arg(long, value_name = "FILE", default_value = "/etc/docker/daemon.json")]
    pub config: PathBuf,
    /// The runtime's name in Docker (`docker run --runtime=NAME`).
    #[arg(long, value_name = "NAME", default_value = "smolvisor")]
    pub runtime: String,
    /// Options Docker passes to every call (`runtimeArgs`), e.g. --pcap-log FILE.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub runtime_args: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct SentryDaemonArgs {
    /// The container's id.
    #[arg(long)]
    pub id: String,
    /// `new` (a namespace of its own) or the path of the namespace to enter.
    #[arg(long)]
    pub netns: String,
}

#[derive(Debug, clap::Args)]
pub struct DoArgs {
    /// Network mode: nat (a user-mode gateway in the Sentry: the guest's
    /// eth0 is 10.0.2.15/24, the gateway 10.0.2.2, DNS 10.0.2.3), none
    /// (loopback only), tap:NAME (an existing TAP device), sandbox (take
    /// over the interfaces of --netns), or relay (the interfaces of --netns
    /// as they are: the guest gets their addresses, its flows leave as
    /// sockets made in --netns, its listeners are mirrored there).
    #[arg(long, default_value = "nat", value_name = "MODE")]
    pub network: Network,
    /// With --network sandbox: the network namespace whose interfaces the
    /// sandbox takes over (their addresses move into the sandbox until it
    /// ends); with --network relay, the one its flows leave from.
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,
    /// With nat: forward a host port into the guest, as
    /// [HOSTIP:]HOSTPORT:GUESTPORT[/udp] (repeatable; every address by default).
    #[arg(short = 'p', long = "publish", value_name = "MAPPING")]
    pub publish: Vec<Publish>,
    /// With nat: the gateway's address (10.0.2.2) reaches the host's
    /// 127.0.0.1, which is otherwise out of the guest's reach.
    #[arg(long)]
    pub allow_host_loopback: bool,
    /// With tap:NAME: the NIC's address, as ADDR/PREFIX (repeatable).
    #[arg(long = "address", value_name = "ADDR/PREFIX")]
    pub addresses: Vec<IfAddrArg>,
    /// With tap:NAME: the default gateway (IPv4 or IPv6; repeatable, one per family).
    #[arg(long = "gateway", value_name = "ADDR")]
    pub gateways: Vec<IpAddr>,
    /// Capture every frame of every NIC, loopback included, both
    /// directions, as pcapng to FILE (`-` for standard output; the guest's
    /// standard output then goes to standard error).
    #[arg(long, value_name = "FILE")]
    pub pcap_log: Option<PathBuf>,
    /// Bytes kept of each captured frame (0: whole frames).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub pcap_snaplen: u32,
    /// Rotate the capture when a file would grow past BYTES: a ring of
    /// --pcap-max-files files, FILE, FILE.1, ..., reused in turn.
    #[arg(long, value_name = "BYTES")]
    pub pcap_max_size: Option<u64>,
    /// Files in the capture's ring (with --pcap-max-size).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub pcap_max_files: usize,
    /// Record every trapped system call, its arguments and its answer.
    #[arg(long, value_name = "FILE")]
    pub debug_log: Option<PathBuf>,
    /// Record every change the guest makes to its files, one line each:
    /// the call, the path as resolved inside the sandbox's root, and the
    /// result (appended to FILE).
    #[arg(long, value_name = "FILE")]
    pub file_log: Option<PathBuf>,
    /// Without a Gofer: the guest writes its copy-on-write tree itself (as
    /// before the Gofer; for comparisons and benchmarks).
    #[arg(long, hide = true, conflicts_with = "file_log")]
    pub no_gofer: bool,
    /// Impair frames as a bad network would (netem's faults; this kernel
    /// has none): [NIC:]KEY=VALUE,... with keys loss=P%, delay=TIME,
    /// jitter=TIME, duplicate=P%, reorder=P%, corrupt=P%, rate=RATE
    /// (10mbit, 1gbit, 100kbps), burst=SIZE (the rate's bucket, in bytes:
    /// 32kb), limit=FRAMES (queued, 1000), seed=N and
    /// dir=in|out|both (to the guest, from it; both by default). Every NIC
    /// but lo unless NIC: names one. Repeatable (or `;` between specs);
    /// later keys win. The same seed drops the same frames. With
    /// --pcap-log, dropped frames are recorded with a comment.
    #[arg(
        long = "impair",
        value_name = "[NIC:]KEY=VALUE,...",
        value_delimiter = ';'
    )]
    pub impair: Vec<ImpairSpec>,
    /// Most memory the sandbox's TCP buffers hold together (as Linux's
    /// net.ipv4.tcp_mem bounds its own): SIZE in bytes or with kb, mb or
    /// gb; 256mb by default. Past it each connection keeps 4 KiB of buffer
    /// each way, so a guest or a peer that fills thousands of buffers
    /// slows connections down instead of growing the Sentry.
    #[arg(long = "tcp-memory", value_name = "SIZE", value_parser = memory_size)]
    pub tcp_memory: Option<usize>,
    /// The command and its arguments. Words after the command's first are
    /// its own, hyphens or not; before it, an unknown option is an error
    /// (`--` lets a command start with a hyphen).
    #[arg(required = true, trailing_var_arg = true)]
    pub command: Vec<OsString>,
}

/// How the sandbox reaches the network (`--network`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// Loopback only.
    None,
    /// A user-mode NAT gateway.
    Nat,
    /// An existing TAP device.
    Tap(String),
    /// Take over the interfaces of the current network namespace.
    Sandbox,
    /// Relay flows through sockets of a network namespace.
    Relay,
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Network::None => f.write_str("none"),
            Network::Nat => f.write_str("nat"),
            Network::Tap(name) => write!(f, "tap:{name}"),
            Network::Sandbox => f.write_str("sandbox"),
            Network::Relay => f.write_str("relay"),
        }
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Network::None),
            "nat" => Ok(Network::Nat),
            "sandbox" => Ok(Network::Sandbox),
            "relay" => Ok(Network::Relay),
            _ => match s.strip_prefix("tap:") {
                Some(name) if !name.is_empty() => Ok(Network::Tap(name.to_owned())),
                _ => Err(format!(
                    "unknown network mode {s:?} (expected none, nat, tap:NAME, sandbox or relay)"
                )),
            },
        }
    }
}

/// An interface address, `ADDR/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddrArg(pub netstack::IfAddr);

impl FromStr for IfAddrArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("bad address {s:?} (expected ADDR/PREFIX, e.g. 192.168.7.2/24)");
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix_len: u8 = len.parse().map_err(|_| bad())?;
        if prefix_len > if addr.is_ipv4() { 32 } else { 128 } {
            return Err(bad());
        }
        Ok(IfAddrArg(netstack::IfAddr { addr, prefix_len }))
    }
}

impl DoArgs {
    /// Flags that only mean something in another network mode are errors.
    pub fn check(&self) -> Result<(), String> {
        if self.pcap_max_size.is_some() && self.pcap_log.is_none() {
            return Err("--pcap-max-size needs --pcap-log FILE".into());
        }
        let tap = matches!(self.network, Network::Tap(_));
        if !tap && (!self.addresses.is_empty() || !self.gateways.is_empty()) {
            return Err("--address and --gateway need --network tap:NAME".into());
        }
        if tap && self.addresses.is_empty() {
            return Err("--network tap:NAME needs --address ADDR/PREFIX".into());
        }
        let nat = self.network == Network::Nat;
        if !nat && (!self.publish.is_empty() || self.allow_host_loopback) {
            return Err("--publish and --allow-host-loopback need --network nat".into());
        }
        match (&self.network, &self.netns) {
            (Network::Sandbox | Network::Relay, None) => {
                Err(format!("--network {} needs --netns PATH", self.network))
            }
            (Network::Sandbox | Network::Relay, Some(_)) | (_, None) => Ok(()),
            (_, Some(_)) => Err("--netns needs --network sandbox or relay".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_modes_parse_and_print_back() {
        for text in ["none", "nat", "sandbox", "relay", "tap:tap0"] {
            let mode: Network = text.parse().unwrap();
            assert_eq!(mode.to_string(), text);
        }
        assert_eq!("tap:x".parse(), Ok(Network::Tap("x".into())));
        for bad in ["", "tap:", "host", "NAT"] {
            assert!(bad.parse::<Network>().is_err(), "{bad:?}");
        }
    }

    fn args(line: &[&str]) -> Result<DoArgs, String> {
        let cli = Cli::try_parse_from(line).map_err(|e| e.to_string())?;
        let Command::Do(a) = cli.command else {
            return Err("not `do`".into());
        };
        a.check()?;
        Ok(a)
    }

    #[test]
    fn nat_is_the_default_and_mode_flags_must_match_the_mode() {
        let a = args(&["smolvisor", "do", "true"]).unwrap();
        assert_eq!(a.network, Network::Nat);
        let a = args(&[
            "smolvisor",
            "do",
            "-p",
            "8080:80",
            "-p",
            "53:53/udp",
            "true",
        ])
        .unwrap();
        assert_eq!(a.publish.len(), 2);
        assert!(a.publish[1].udp);
        assert!(args(&["smolvisor", "do", "--network", "none", "-p", "1:1", "true"]).is_err());
        assert!(args(&["smolvisor", "do", "--network", "sandbox", "true"]).is_err());
        assert!(args(&["smolvisor", "do", "--netns", "/run/netns/x", "true"]).is_err());
        assert!(args(&["smolvisor", "do", "-p", "80", "true"]).is_err());
        let a = args(&[
            "smolvisor",
            "do",
            "--network",
            "sandbox",
            "--netns",
            "/x",
            "true",
        ]);
        assert_eq!(a.unwrap().netns, Some(PathBuf::from("/x")));
    }

    fn command(line: &[&str]) -> Vec<OsString> {
        args(line).unwrap().command
    }

    #[test]
    fn an_unknown_option_before_the_command_is_an_error_that_names_it() {
        let e =
            Cli::try_parse_from(["smolvisor", "do", "--netwrk", "nat", "--", "true"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        assert_eq!(e.exit_code(), 2);
        let text = e.to_string();
        assert!(text.contains("unexpected argument '--netwrk'"), "{text}");
        let e = Cli::try_parse_from(["smolvisor", "do", "-z", "true"]).unwrap_err();
        assert!(e.to_string().contains("'-z'"), "{e}");
    }

    #[test]
    fn words_after_the_command_are_the_commands_own() {
        let words = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            command(&["smolvisor", "do", "--", "--weird-prog", "-x"]),
            words(&["--weird-prog", "-x"])
        );
        assert_eq!(
            command(&["smolvisor", "do", "ls", "--network", "-l"]),
            words(&["ls", "--network", "-l"])
        );
        assert_eq!(
            command(&[
                "smolvisor",
                "do",
                "--network",
                "none",
                "sh",
                "-c",
                "echo -n hi"
            ]),
            words(&["sh", "-c", "echo -n hi"])
        );
        let a = args(&["smolvisor", "do", "-p", "1:1", "--", "true", "--", "-p"]).unwrap();
        assert_eq!(a.publish.len(), 1);
        assert_eq!(a.command, words(&["true", "--", "-p"]));
    }
}

/// The transport of the server under `fuzz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FuzzProto {
    Tcp,
    Udp,
}

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// The port the server listens on (in the sandbox, at 10.0.2.15).
    #[arg(long)]
    pub port: u16,
    /// Its transport.
    #[arg(long, value_enum, default_value = "tcp")]
    pub proto: FuzzProto,
    /// Seeds: a pcap/pcapng file (the client bytes of each connection, or
    /// each datagram, to --port), or a directory of captures and raw files.
    /// Without seeds, inputs start as small random ones.
    #[arg(long, value_name = "PCAP|DIR")]
    pub seeds: Option<PathBuf>,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long, value_name = "S")]
    pub time: Option<u64>,
    /// Where reproducers (crash-N-SIGNAL.pcapng, hang-N.pcapng) and the
    /// server's output (server.log) go.
    #[arg(long, value_name = "DIR", default_value = "fuzz-out")]
    pub out: PathBuf,
    /// Inputs in flight at once.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// Longest input, in bytes.
    #[arg(long, default_value_t = 4096)]
    pub max_len: usize,
    /// Percent of inputs whose frames' headers are edited too.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub frame_share: u8,
    /// Seconds an ordinary input may go unanswered before the server
    /// counts as hung (0: never).
    #[arg(long, default_value_t = 5.0)]
    pub hang_timeout: f64,
    /// The mutator's seed (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop at the first crash (exit status 3).
    #[arg(long)]
    pub stop_on_crash: bool,
    /// The server and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// A reproducer written by `smolvisor fuzz`.
    pub file: PathBuf,
    /// The server and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

#[derive(Debug, clap::Args)]
pub struct AflShimArgs {
    /// The server and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}
