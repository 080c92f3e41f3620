//! `--impair` (and the annotation `dev.smolvisor.impair`): what the user
//! asked for, parsed once, and which impairments each NIC gets.
//!
//! A spec is `[NIC:]KEY=VALUE[,KEY=VALUE...]`, in netem's words and units:
//! `loss=1%,delay=20ms,jitter=5ms,seed=7`. Without `NIC:` it applies to
//! every NIC but `lo`; `dir=in` (to the guest), `dir=out` (from the guest)
//! or `dir=both` (the default) picks the directions. Several specs (the
//! option repeated, or separated by `;`) apply in order, later keys
//! replacing earlier ones.

use std::fmt;
use std::str::FromStr;

use netstack::Duration;
use netstack::link::Impairments;

/// Every key a spec may hold, for error messages.
const KEYS: &str =
    "loss, delay, jitter, duplicate, reorder, corrupt, rate, burst, limit, seed, dir";

/// One `--impair` spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImpairSpec {
    /// As given, to pass on (to the OCI Sentry's command line).
    text: String,
    /// The NIC named, or every NIC but `lo`.
    nic: Option<String>,
    to_guest: bool,
    from_guest: bool,
    settings: Vec<Setting>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setting {
    Loss(u32),
    Duplicate(u32),
    Reorder(u32),
    Corrupt(u32),
    Delay(Duration),
    Jitter(Duration),
    Rate(u64),
    Burst(u64),
    Limit(usize),
    Seed(u64),
}

impl Setting {
    fn apply(self, to: &mut Impairments) {
        match self {
            Setting::Loss(p) => to.loss_ppm = p,
            Setting::Duplicate(p) => to.duplicate_ppm = p,
            Setting::Reorder(p) => to.reorder_ppm = p,
            Setting::Corrupt(p) => to.corrupt_ppm = p,
            Setting::Delay(d) => to.delay = d,
            Setting::Jitter(d) => to.jitter = d,
            Setting::Rate(r) => to.rate_bps = r,
            Setting::Burst(b) => to.burst = b,
            Setting::Limit(n) => to.limit = n,
            Setting::Seed(s) => to.seed = s,
        }
    }
}

impl fmt::Display for ImpairSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for ImpairSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.is_empty() {
            return Err(format!(
                "an empty impairment (expected [NIC:]KEY=VALUE,... with keys {KEYS})"
            ));
        }
        let (nic, body) = match text.split_once(':') {
            Some((name, rest)) if !name.contains(['=', ',']) => {
                let ok = !name.is_empty()
                    && name.len() < 16
                    && !name.contains(|c: char| c == '/' || c.is_whitespace());
                if !ok {
                    return Err(format!("{name:?} is not an interface name"));
                }
                (Some(name.to_owned()), rest)
            }
            _ => (None, text),
        };
        let mut spec = ImpairSpec {
            text: text.to_owned(),
            nic,
            to_guest: true,
            from_guest: true,
            settings: Vec::new(),
        };
        for item in body.split(',') {
            let item = item.trim();
            let Some((key, value)) = item.split_once('=') else {
                return Err(format!(
                    "{item:?} is not KEY=VALUE (keys: {KEYS}; e.g. loss=1%,delay=20ms)"
                ));
            };
            let (key, value) = (key.trim(), value.trim());
            let bad = |what: &str| format!("{key}={value}: {what}");
            let setting = match key {
                "loss" => Setting::Loss(percent(value).map_err(|e| bad(&e))?),
                "duplicate" => Setting::Duplicate(percent(value).map_err(|e| bad(&e))?),
                "reorder" => Setting::Reorder(percent(value).map_err(|e| bad(&e))?),
                "corrupt" => Setting::Corrupt(percent(value).map_err(|e| bad(&e))?),
                "delay" => Setting::Delay(time(value).map_err(|e| bad(&e))?),
                "jitter" => Setting::Jitter(time(value).map_err(|e| bad(&e))?),
                "rate" => Setting::Rate(rate(value).map_err(|e| bad(&e))?),
                "burst" => Setting::Burst(size(value).map_err(|e| bad(&e))?),
                "limit" => Setting::Limit(match value.parse() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(bad("expected a number of frames, at least 1")),
                }),
                "seed" => Setting::Seed(value.parse().map_err(|_| bad("expected a whole number"))?),
                "dir" => {
                    (spec.to_guest, spec.from_guest) = match value {
                        "in" => (true, false),
                        "out" => (false, true),
                        "both" => (true, true),
                        _ => {
                            return Err(bad(
                                "expected in (to the guest), out (from the guest) or both",
                            ));
                        }
                    };
                    continue;
                }
                _ => return Err(format!("unknown key {key:?} (keys: {KEYS})")),
            };
            spec.settings.push(setting);
        }
        Ok(spec)
    }
}

/// Specs separated by `;`, as the annotation carries them.
pub fn parse_list(s: &str) -> Result<Vec<ImpairSpec>, String> {
    s.split(';')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// A probability: `1%`, `0.5%` or `1` (percent, as tc reads it), in
/// parts per million.
fn percent(v: &str) -> Result<u32, String> {
    let n = v.strip_suffix('%').unwrap_or(v);
    match n.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok((p * 10_000.0).round() as u32),
        _ => Err("expected a percentage from 0% to 100%".into()),
    }
}

/// A time with its unit: `20ms`, `1.5s`, `500us`.
fn time(v: &str) -> Result<Duration, String> {
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or("expected a unit: us, ms or s (e.g. 20ms)")?;
    let (n, unit) = v.split_at(split);
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        _ => return Err(format!("unknown unit {unit:?} (expected us, ms or s)")),
    };
    match n.parse::<f64>() {
        Ok(x) if x * scale <= 3.6e9 => Ok(Duration::from_micros((x * scale).round() as u64)),
        Ok(_) => Err("longer than an hour".into()),
        Err(_) => Err("expected a number and a unit (e.g. 20ms)".into()),
    }
}

/// A size in bytes: `1500`, `32kb`, `1mb` or `1gb` (1024-based, as tc
/// reads them).
pub(crate) fn size(v: &str) -> Result<u64, String> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => return Err(format!("unknown unit {unit:?} (expected b, kb, mb or gb)")),
    };
    n.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&b| b < 1 << 40)
        .ok_or_else(|| "expected a size in bytes (e.g. 32kb)".into())
}

/// A rate with its unit, in bits per second: `10mbit`, `1gbit`, `500kbit`,
/// or bytes with `bps`, `kbps`, `mbps`, `gbps`, as tc reads them.
fn rate(v: &str) -> Result<u64, String> {
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or("expected a unit: bit, kbit, mbit, gbit, or bps, kbps, mbps, gbps for bytes")?;
    let (n, unit) = v.split_at(split);
    let scale = match unit.to_ascii_lowercase().as_str() {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} (expected bit, kbit, mbit, gbit, bps, kbps, mbps or gbps)"
            ));
        }
    };
    match n.parse::<f64>() {
        Ok(x) if x * scale >= 1.0 && x * scale < 1e15 => Ok((x * scale).round() as u64),
        _ => Err("expected a positive rate (e.g. 10mbit)".into()),
    }
}

/// What NIC `name` gets from `specs`: the impairments from the guest
/// (sent by its stack) and to it; `None` when nothing applies. On `lo`,
/// where every frame sent comes back as received, only `dir=out` settings
/// apply, once per frame.
pub fn for_nic(specs: &[ImpairSpec], name: &str) -> Option<(Impairments, Impairments)> {
    let mut out = Impairments::default();
    let mut to_guest = Impairments::default();
    for spec in specs {
        let applies = match &spec.nic {
            Some(n) => n == name,
            None => name != "lo",
        };
        if !applies {
            continue;
        }
        for s in &spec.settings {
            if spec.from_guest {
                s.apply(&mut out);
            }
            if spec.to_guest && name != "lo" {
                s.apply(&mut to_guest);
            }
        }
    }
    (!out.is_clean() || !to_guest.is_clean()).then_some((out, to_guest))
}

/// The NIC names `specs` ask for that are not among `nics`.
pub fn unknown_nics<'a>(specs: &'a [ImpairSpec], nics: &[&str]) -> Vec<&'a str> {
    specs
        .iter()
        .filter_map(|s| s.nic.as_deref())
        .filter(|n| !nics.contains(n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> ImpairSpec {
        s.parse().unwrap()
    }

    #[test]
    fn a_netem_like_spec_parses_in_its_units() {
        let s = spec(
            "loss=1%,delay=20ms,jitter=5ms,duplicate=0.5,reorder=2%,corrupt=0.1%,rate=10mbit,limit=50,seed=7",
        );
        let (out, inb) = for_nic(&[s], "eth0").unwrap();
        assert_eq!(out, inb);
        assert_eq!(out.loss_ppm, 10_000);
        assert_eq!(out.duplicate_ppm, 5_000);
        assert_eq!(out.reorder_ppm, 20_000);
        assert_eq!(out.corrupt_ppm, 1_000);
        assert_eq!(out.delay, Duration::from_millis(20));
        assert_eq!(out.jitter, Duration::from_millis(5));
        assert_eq!(out.rate_bps, 10_000_000);
        assert_eq!(out.limit, 50);
        assert_eq!(out.seed, 7);
        assert_eq!(time("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(time("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(rate("1Gbit"), Ok(1_000_000_000));
        assert_eq!(rate("100kbps"), Ok(800_000));
        let (out, _) = for_nic(&[spec("rate=1mbit,burst=32kb")], "eth0").unwrap();
        assert_eq!((out.rate_bps, out.burst), (1_000_000, 32 * 1024));
        assert_eq!(size("1500"), Ok(1500));
    }

    #[test]
    fn directions_and_nics_are_chosen_by_dir_and_name() {
        let specs = parse_list("dir=out,delay=10ms; dir=in,loss=5%;eth1:rate=1mbit").unwrap();
        let (out, inb) = for_nic(&specs, "eth0").unwrap();
        assert_eq!((out.delay, out.loss_ppm), (Duration::from_millis(10), 0));
        assert_eq!((inb.delay, inb.loss_ppm), (Duration::ZERO, 50_000));
        assert_eq!(out.rate_bps, 0);
        let (out1, inb1) = for_nic(&specs, "eth1").unwrap();
        assert_eq!((out1.rate_bps, inb1.rate_bps), (1_000_000, 1_000_000));
        // lo only when named, and then once per frame.
        assert_eq!(for_nic(&specs, "lo"), None);
        let (out, inb) = for_nic(&[spec("lo:delay=1ms")], "lo").unwrap();
        assert_eq!(
            (out.delay, inb.delay),
            (Duration::from_millis(1), Duration::ZERO)
        );
        // Later specs win, key by key.
        let (out, _) = for_nic(&parse_list("loss=1%,delay=5ms;loss=2%").unwrap(), "x").unwrap();
        assert_eq!(
            (out.loss_ppm, out.delay),
            (20_000, Duration::from_millis(5))
        );
        assert_eq!(for_nic(&[spec("seed=3")], "eth0"), None);
        assert_eq!(unknown_nics(&specs, &["eth0", "lo"]), ["eth1"]);
        assert_eq!(spec(" eth1:rate=1mbit ").to_string(), "eth1:rate=1mbit");
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (bad, says) in [
            ("", "empty"),
            ("loss", "not KEY=VALUE"),
            ("loss=abc", "loss=abc: expected a percentage"),
            ("loss=101%", "percentage"),
            ("delay=20", "expected a unit"),
            ("delay=20min", "unknown unit \"min\""),
            ("rate=10mb", "unknown unit \"mb\""),
            ("rate=0mbit", "positive rate"),
            ("limit=0", "at least 1"),
            ("burst=2gbit", "unknown unit \"gbit\""),
            ("seed=-1", "whole number"),
            ("dir=up", "expected in (to the guest)"),
            ("lose=1%", "unknown key \"lose\""),
            ("a/b:loss=1%", "not an interface name"),
        ] {
            let e = bad.parse::<ImpairSpec>().unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
