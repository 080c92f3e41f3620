//! The fuzz loop: keeps a few inputs in flight against the sandboxed
//! server, counts executions, and on a crash or a hang writes a
//! reproducer, restarts the server and goes on. Once a second a status
//! line goes to standard error.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::coverage::{self, Coverage};
use super::driver::{Driver, Outcome, Record};
use super::mutate::{self, Rng};
use super::script::{Script, scripts_from_frames};
use super::sys::MapMemory;
use super::target::{Ended, Target};
use super::wire::Proto;
use super::{FuzzError, repro};

/// Completed inputs kept for a reproducer, besides those in flight.
const HISTORY: usize = 32;
/// The most suspects of a crash tried, and written when no single one
/// reproduces it.
const SUSPECTS: usize = 16;
/// The most inputs the corpus grows to.
const MAX_CORPUS: usize = 4096;
/// How long an ordinary input waits for its answer in a replay.
const REPLAY_WAIT: Duration = Duration::from_secs(3);
/// How long a fresh server may take to listen.
const START_WAIT: Duration = Duration::from_secs(15);
/// How long a replay waits, after its last input, for the server to die.
pub const CRASH_WAIT: Duration = Duration::from_millis(500);

/// What to fuzz and how.
#[derive(Debug, Clone)]
pub struct Settings {
    pub argv: Vec<OsString>,
    pub port: u16,
    pub proto: Proto,
    pub seeds: Vec<Vec<u8>>,
    pub time: Option<Duration>,
    pub out: PathBuf,
    pub parallel: usize,
    pub max_len: usize,
    /// Percent of inputs that also get frame-level edits.
    pub frame_share: usize,
    pub hang_wait: Duration,
    pub seed: u64,
    pub stop_on_crash: bool,
}

/// What a campaign found.
#[derive(Debug, Default)]
pub struct Findings {
    pub execs: u64,
    pub crashes: u64,
    pub unique: Vec<(i32, u64)>,
    pub hangs: u64,
    pub elapsed: Duration,
}

/// A server started and listening, with the driver on its cable.
pub struct Running {
    pub target: Target,
    pub driver: Driver,
    /// Its coverage map, if the server keeps one.
    pub map: Option<MapMemory>,
}

/// Ports the fuzzer's connections come from, in turn.
#[derive(Debug)]
pub struct Ports(u16);

impl Ports {
    pub fn new() -> Ports {
        Ports(20_000)
    }

    pub fn next(&mut self, driver: &Driver) -> u16 {
        loop {
            self.0 = if self.0 >= 60_999 { 20_000 } else { self.0 + 1 };
            if !driver.busy(self.0) {
                return self.0;
            }
        }
    }
}

/// Starts the server and waits until it answers on `port`.
pub fn start(
    argv: &[OsString],
    port: u16,
    proto: Proto,
    log: &File,
    hang_wait: Duration,
    ports: &mut Ports,
) -> Result<Running, FuzzError> {
    let mut target = Target::start(argv, log)?;
    let cable = target
        .cable
        .try_clone()
        .map_err(|e| FuzzError::Io("the cable".into(), e))?;
    let mut driver = Driver::new(cable, hang_wait);
    let deadline = Instant::now() + START_WAIT;
    loop {
        if let Some(ended) = target.ended() {
            return Err(FuzzError::ServerEnded(ended.to_string()));
        }
        if Instant::now() > deadline {
            return Err(FuzzError::NotListening(port));
        }
        let sport = ports.next(&driver);
        let mut probe = match proto {
            Proto::Tcp => Script::tcp(sport, port, 1, b""),
            Proto::Udp => Script::udp(sport, port, b""),
        };
        probe.probe = true;
        driver.start(probe, Instant::now());
        let mut outcome = None;
        while outcome.is_none() && target.ended().is_none() {
            outcome = driver
                .step(Duration::from_millis(50), Some(target.pidfd()))
                .into_iter()
                .next()
                .map(|(_, o)| o);
        }
        match outcome {
            Some(Outcome::Refused) => std::thread::sleep(Duration::from_millis(20)),
            // A datagram that met no port-unreachable found a socket.
            Some(Outcome::Answered) | Some(Outcome::Quiet)
                if outcome != Some(Outcome::Quiet) || proto == Proto::Udp =>
            {
                let map = coverage::attach(target.pid());
                return Ok(Running {
                    target,
                    driver,
                    map,
                });
            }
            _ => {}
        }
    }
}

/// Plays `scripts` one after the other into a fresh sandbox and says how
/// the server ended, if it did within [`CRASH_WAIT`] of the last.
pub fn replay(
    argv: &[OsString],
    scripts: Vec<Script>,
    log: &File,
    hang_wait: Duration,
) -> Result<Option<Ended>, FuzzError> {
    let port = scripts
        .iter()
        .find_map(|s| {
            s.frames
                .first()
                .and_then(|f| super::wire::own_dport(&f.bytes))
        })
        .ok_or(FuzzError::EmptyReproducer)?;
    let proto = scripts[0].proto;
    let mut ports = Ports::new();
    let Running {
        mut target,
        mut driver,
        ..
    } = start(argv, port, proto, log, hang_wait, &mut ports)?;
    for s in scripts {
        if target.ended().is_some() {
            break;
        }
        driver.start(s, Instant::now());
        while driver.in_flight() > 0 && target.ended().is_none() {
            driver.step(Duration::from_millis(50), Some(target.pidfd()));
        }
    }
    let until = Instant::now() + CRASH_WAIT;
    while target.ended().is_none() && Instant::now() < until {
        driver.step(Duration::from_millis(20), Some(target.pidfd()));
    }
    Ok(target.stop())
}

/// Runs a campaign until its time is up (or its first crash).
pub fn run(s: &Settings) -> Result<Findings, FuzzError> {
    std::fs::create_dir_all(&s.out).map_err(|e| FuzzError::Io(s.out.display().to_string(), e))?;
    let log_path = s.out.join("server.log");
    let log =
        File::create(&log_path).map_err(|e| FuzzError::Io(log_path.display().to_string(), e))?;
    let mut rng = Rng::new(s.seed);
    let mut ports = Ports::new();
    let mut found = Findings::default();
    let begin = Instant::now();
    let mut last_print = begin;
    let mut execs_at_print = 0;
    let mut history: VecDeque<(Record, Outcome)> = VecDeque::new();
    let mut n_input: u64 = 0;
    let mut run = start(&s.argv, s.port, s.proto, &log, s.hang_wait, &mut ports)?;
    let mut last_answer = Instant::now();
    let mut coverage = Coverage::default();
    let mut seeds: Vec<Vec<u8>> = if s.seeds.is_empty() {
        (0..8)
            .map(|_| (0..1 + rng.below(16)).map(|_| rng.byte()).collect())
            .collect()
    } else {
        s.seeds.clone()
    };
    loop {
        let now = Instant::now();
        if s.time.is_some_and(|t| now - begin >= t) {
            break;
        }
        while run.driver.in_flight() < s.parallel {
            n_input += 1;
            let script = next_input(s, &seeds, &mut rng, &mut ports, &run.driver, n_input);
            run.driver.start(script, Instant::now());
        }
        let ended = run
            .driver
            .step(Duration::from_millis(10), Some(run.target.pidfd()));
        // New edges: the inputs that just ended join the corpus.
        if !ended.is_empty()
            && let Some(map) = &run.map
            && coverage.update(map)
            && seeds.len() < MAX_CORPUS
        {
            seeds.extend(ended.iter().map(|(r, _)| r.payload.clone()));
        }
        for (record, outcome) in ended {
            found.execs += 1;
            if outcome == Outcome::Answered {
                last_answer = Instant::now();
            }
            let hung = outcome == Outcome::Hung
                || (s.proto == Proto::Udp && last_answer.elapsed() > s.hang_wait);
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back((record, outcome));
            if hung && s.hang_wait > Duration::ZERO {
                found.hangs += 1;
                let path = s.out.join(format!("hang-{}.pcapng", found.hangs));
                let records: Vec<Record> = history.iter().map(|(r, _)| r.clone()).collect();
                repro::write(&path, &records)?;
                eprintln!(
                    "fuzz: the server hung (no answer in {:?}); inputs in {}",
                    s.hang_wait,
                    path.display()
                );
                history.clear();
                run.target.stop();
                run = start(&s.argv, s.port, s.proto, &log, s.hang_wait, &mut ports)?;
                last_answer = Instant::now();
                break;
            }
        }
        // The cable closes as the sandbox ends: wait for its status.
        let ended = if run.driver.closed {
            Some(
                run.target
                    .wait_end(Duration::from_secs(5))
                    .unwrap_or(Ended::Exit(-1)),
            )
        } else {
            run.target.ended()
        };
        if let Some(ended) = ended {
            // Suspects, the last to end first: the connection a server
            // dies on ends as it dies (its socket closed by the kernel,
            // which the Sentry passes on as a FIN); then those in flight.
            // Left out: what never reached the program (refused, or no
            // SYN-ACK), and answered datagrams (each answer came after
            // its handling).
            let mut all: Vec<(Record, Outcome)> = history.drain(..).rev().collect();
            all.extend(
                run.driver
                    .abandon()
                    .into_iter()
                    .map(|r| (r, Outcome::Quiet)),
            );
            let mut suspects: Vec<Record> = all
                .iter()
                .filter(|(r, o)| {
                    r.reached
                        && *o != Outcome::Refused
                        && (s.proto == Proto::Tcp || *o != Outcome::Answered)
                })
                .map(|(r, _)| r.clone())
                .collect();
            if suspects.is_empty() {
                suspects = all.into_iter().map(|(r, _)| r).collect();
            }
            suspects.truncate(SUSPECTS);
            match ended {
                Ended::Signal(libc::SIGPIPE) => eprintln!(
                    "fuzz: the server died of SIGPIPE (it wrote after the fuzzer reset a \
                     connection, and does not ignore SIGPIPE): not counted; restarting it"
                ),
                Ended::Signal(sig) | Ended::SentryDied(sig) => {
                    found.crashes += 1;
                    let found_at = begin.elapsed();
                    let (records, note) = minimize(s, &suspects, &log);
                    let key = (sig, hash(&records));
                    let new = !found.unique.contains(&key);
                    if new {
                        found.unique.push(key);
                    }
                    let path =
                        s.out
                            .join(format!("crash-{}-{}.pcapng", found.crashes, signame(sig)));
                    repro::write(&path, &records)?;
                    eprintln!(
                        "fuzz: the server was {ended} after {:.1} s, {} execs ({}); {note}: {}",
                        found_at.as_secs_f64(),
                        found.execs,
                        if new { "new" } else { "seen before" },
                        path.display()
                    );
                    if s.stop_on_crash {
                        break;
                    }
                }
                Ended::Exit(code) => {
                    eprintln!("fuzz: the server exited (status {code}); restarting it");
                }
            }
            run = start(&s.argv, s.port, s.proto, &log, s.hang_wait, &mut ports)?;
            last_answer = Instant::now();
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            let secs = last_print.elapsed().as_secs_f64();
            let cov = if coverage.edges > 0 {
                format!("  edges {}  corpus {}", coverage.edges, seeds.len())
            } else {
                String::new()
            };
            eprintln!(
                "fuzz: {:>5}s  execs {}  {:.0}/s  crashes {} (unique {})  hangs {}{cov}",
                begin.elapsed().as_secs(),
                found.execs,
                (found.execs - execs_at_print) as f64 / secs,
                found.crashes,
                found.unique.len(),
                found.hangs
            );
            last_print = Instant::now();
            execs_at_print = found.execs;
        }
    }
    found.elapsed = begin.elapsed();
    run.target.stop();
    Ok(found)
}

fn next_input(
    s: &Settings,
    seeds: &[Vec<u8>],
    rng: &mut Rng,
    ports: &mut Ports,
    driver: &Driver,
    n: u64,
) -> Script {
    let which = rng.below(seeds.len());
    let other = &seeds[rng.below(seeds.len())];
    let mut data = seeds[which].clone();
    mutate::havoc(rng, &mut data, other, s.max_len);
    let sport = ports.next(driver);
    let mut script = match s.proto {
        Proto::Tcp => Script::tcp(sport, s.port, rng.next() as u32, &data),
        Proto::Udp => Script::udp(sport, s.port, &data),
    };
    let mut note = format!("smolvisor fuzz: input {n}, from seed {which}");
    if rng.below(100) < s.frame_share {
        let edits = script.mutate_frames(rng);
        note.push_str(&format!(", frame edits {edits:?}"));
    }
    script.note = note;
    script.id = n;
    script
}

/// The one suspect that crashes a fresh server alone, if one does (tried
/// in order); else all of them.
fn minimize(s: &Settings, suspects: &[Record], log: &File) -> (Vec<Record>, String) {
    for r in suspects {
        let scripts = scripts_from_frames(&r.frames);
        if scripts.is_empty() {
            continue;
        }
        if let Ok(Some(Ended::Signal(_))) = replay(&s.argv, scripts, log, REPLAY_WAIT) {
            return (vec![r.clone()], "one input reproduces it".into());
        }
    }
    let mut all = suspects.to_vec();
    all.sort_by_key(|r| r.id);
    (
        all,
        format!(
            "no single input reproduced it; the last {} inputs",
            suspects.len()
        ),
    )
}

fn hash(records: &[Record]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    for r in records {
        for (from_guest, f) in &r.frames {
            if !from_guest {
                f.get(super::wire::L4 + 20..).hash(&mut h);
            }
        }
    }
    h.finish()
}

/// A signal's name, for file names.
pub fn signame(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map_or_else(|_| format!("sig{sig}"), |s| s.as_str().to_owned())
}

/// Reads a reproducer and replays it (the `replay` command).
pub fn replay_file(
    argv: &[OsString],
    file: &Path,
    log: &File,
    hang_wait: Duration,
) -> Result<Option<Ended>, FuzzError> {
    let frames = repro::read_frames(file)?;
    let scripts = scripts_from_frames(&frames);
    if scripts.is_empty() {
        return Err(FuzzError::EmptyReproducer);
    }
    replay(argv, scripts, log, hang_wait)
}
