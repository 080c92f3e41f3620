//! `smolvisor install`: registers smolvisor in Docker's daemon.json.

use std::fs;
use std::path::Path;

use super::Error;
use crate::cli::InstallArgs;

pub fn run(args: &InstallArgs) -> Result<i32, Error> {
    let exe = std::env::current_exe()?.canonicalize()?;
    let mut config: serde_json::Value = match fs::read(&args.config) {
        Ok(bytes) if !bytes.iter().all(u8::is_ascii_whitespace) => {
            serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is not valid JSON: {e}", args.config.display()))?
        }
        Ok(_) => serde_json::json!({}),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(format!("reading {}: {e}", args.config.display()).into()),
    };
    let object = config
        .as_object_mut()
        .ok_or_else(|| format!("{} does not hold a JSON object", args.config.display()))?;
    let runtimes = object
        .entry("runtimes")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .ok_or_else(|| format!("{}: \"runtimes\" is not an object", args.config.display()))?;
    let mut entry = serde_json::json!({ "path": exe });
    if !args.runtime_args.is_empty() {
        entry["runtimeArgs"] = serde_json::json!(args.runtime_args);
    }
    runtimes.insert(args.runtime.clone(), entry);
    write_atomically(&args.config, &serde_json::to_vec_pretty(&config)?)?;
    println!(
        "smolvisor: registered runtime {:?} ({}) in {}",
        args.runtime,
        exe.display(),
        args.config.display()
    );
    println!(
        "Reload dockerd to use it: `kill -HUP $(pidof dockerd)` (or `systemctl reload docker`), \
         then `docker run --runtime={} ...`.",
        args.runtime
    );
    Ok(0)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.smolvisor-tmp");
    fs::write(&tmp, bytes).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("replacing {}: {e}", path.display()))?;
    Ok(())
}
