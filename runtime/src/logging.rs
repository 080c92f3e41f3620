//! Diagnostics. `do` writes them to standard error (`SMOLVISOR_LOG` sets
//! the level). The OCI commands write them to `--log`, as text or as the
//! JSON lines runc writes (`{"level":"error","msg":"...","time":"..."}`),
//! which containerd's shim reads back to explain a failure.

use std::fmt::{self, Write as _};
use std::fs::OpenOptions;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::{GlobalArgs, LogFormat};

/// Warnings and errors, but not libcgroups' word on every controller this
/// kernel lacks (hugetlb, perf_event...) at each command.
const QUIET: &str = "warn,libcgroups=error";

/// The --log file also keeps smolvisor's own notes (a capture's size, say).
const LOG_FILE: &str = "info,libcgroups=error,libcontainer=warn";

/// Diagnostics of `do` (and of any command when no `--log` is given).
pub fn to_stderr() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SMOLVISOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(QUIET));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}

/// Diagnostics of the OCI commands, to `--log` when given.
pub fn for_oci(global: &GlobalArgs) {
    let Some(path) = &global.log else {
        return to_stderr();
    };
    let file = match OpenOptions::new().create(true).append(true).open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("smolvisor: cannot open the log {}: {e}", path.display());
            return to_stderr();
        }
    };
    let filter = if global.debug { "debug" } else { LOG_FILE };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(Mutex::new(file))
        .with_ansi(false);
    match global.log_format {
        LogFormat::Json => builder.event_format(RuncJson).init(),
        LogFormat::Text => builder.init(),
    }
}

/// runc's (logrus's) JSON lines.
struct RuncJson;

impl<S, N> FormatEvent<S, N> for RuncJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut msg = Message(String::new());
        event.record(&mut msg);
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        let line = serde_json::json!({
            "level": level,
            "msg": msg.0,
            "time": chrono::Utc::now().to_rfc3339(),
        });
        writeln!(writer, "{line}")
    }
}

/// An event's message, then its other fields as `name=value`.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}
