//! Small root file systems for containers, assembled from the host's own
//! programs: the Docker tests import one as an image (`docker import`), the
//! OCI CLI tests use one as a bundle's `rootfs`.
//!
//! [`assemble`] makes busybox (Debian's `busybox-static`) with every applet
//! linked where `busybox --list-full` says, `/etc/passwd`, `/etc/group`,
//! `/etc/nsswitch.conf`, `/tmp` and the usual mount points; with
//! `with_python`, also a Python 3 interpreter with its shared libraries and
//! its standard library (without the tests, IDLE, Tk, lib2to3 and the
//! like), enough for `http.server`, `socket` and `urllib.request`.
//! [`add_program`] copies one more host program with what `ldd` says it
//! loads. Needs `ldd`.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `PATH` in the images and bundles made from these root file systems.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The statically linked busybox of Debian's `busybox-static`.
pub fn busybox() -> PathBuf {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("busybox is not installed (Debian package busybox-static)")
}

/// The Python interpreter to copy: Debian's `/usr/bin/python3.11` when
/// there is one, else whatever `python3` runs (pyenv's shim resolves to
/// the real binary through `sys.executable`).
pub fn python() -> PathBuf {
    let debian = Path::new("/usr/bin/python3.11");
    if debian.exists() {
        return debian.to_owned();
    }
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python3 -c 'print(sys.executable)' failed"
    );
    let exe = String::from_utf8(out.stdout).expect("UTF-8 path");
    fs::canonicalize(exe.trim()).expect("python3's executable exists")
}

/// Fills `dir` (created if missing) with a busybox root file system, plus
/// Python 3 if `with_python`.
pub fn assemble(dir: &Path, with_python: bool) {
    for sub in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "proc", "sys", "dev",
    ] {
        fs::create_dir_all(dir.join(sub)).expect("create rootfs dir");
    }
    for sub in ["tmp", "var/tmp"] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).expect("create rootfs tmp");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o1777)).expect("chmod 1777");
    }
    let busybox = busybox();
    copy_file(&busybox, &dir.join("bin/busybox"));
    for applet in busybox_applets(&busybox) {
        let rel = applet.trim_start_matches('/');
        if rel.is_empty() || rel.ends_with("/busybox") {
            continue;
        }
        let link = dir.join(rel);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        fs::create_dir_all(link.parent().expect("applet has a directory")).expect("mkdir");
        symlink("/bin/busybox", &link).expect("link busybox applet");
    }
    write(
        dir,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    );
    write(dir, "etc/group", "root:x:0:\nnogroup:x:65534:\n");
    write(
        dir,
        "etc/nsswitch.conf",
        "passwd: files\ngroup: files\nhosts: files dns\n",
    );
    if with_python {
        add_python(dir);
    }
}

/// The applets' full paths (`/bin/sh`, `/usr/bin/wget`, ...), or bare names
/// put in `/bin` when this busybox has no `--list-full`.
fn busybox_applets(busybox: &Path) -> Vec<String> {
    let run = |arg: &str| {
        Command::new(busybox)
            .arg(arg)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    if let Some(full) = run("--list-full") {
        return full
            .lines()
            .map(|l| format!("/{}", l.trim_start_matches('/')))
            .collect();
    }
    let names = run("--list").expect("busybox --list");
    names.lines().map(|n| format!("/bin/{n}")).collect()
}

/// Writes `contents` to `rel` under `dir`, creating its directory.
pub fn write(dir: &Path, rel: &str, contents: &str) {
    let path = dir.join(rel);
    fs::create_dir_all(path.parent().expect("file has a directory")).expect("mkdir");
    fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Copies the host program `program` to the same path under `dir`, with
/// the shared libraries and the loader `ldd` lists (also at their own
/// paths; symbolic links are followed, so each lands as a plain file).
pub fn add_program(dir: &Path, program: &Path) {
    copy_file(program, &under(dir, program));
    add_libraries(dir, program);
}

/// Copies what `ldd FILE` lists to the same paths under `dir`.
fn add_libraries(dir: &Path, file: &Path) {
    for lib in ldd(file) {
        let dest = under(dir, &lib);
        if !dest.exists() {
            copy_file(&lib, &dest);
        }
    }
}

/// The absolute paths in `ldd FILE`'s output (none for a static binary).
fn ldd(file: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(file).output().expect("run ldd");
    // A static binary makes ldd exit 1 ("not a dynamic executable").
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// `path` (absolute) re-rooted under `dir`.
fn under(dir: &Path, path: &Path) -> PathBuf {
    dir.join(path.strip_prefix("/").unwrap_or(path))
}

/// Copies a file's contents and mode (following symbolic links).
fn copy_file(from: &Path, to: &Path) {
    fs::create_dir_all(to.parent().expect("file has a directory")).expect("mkdir");
    fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}

/// Parts of the standard library no test needs.
const PYTHON_SKIP: &[&str] = &[
    "__pycache__",
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "distutils",
    "site-packages",
    "dist-packages",
];

/// The interpreter at its own path, `/usr/bin/python3` linked to it, its
/// libraries, and its standard library with the libraries its extension
/// modules load.
fn add_python(dir: &Path) {
    let python = python();
    add_program(dir, &python);
    let link = dir.join("usr/bin/python3");
    if python != Path::new("/usr/bin/python3") && link.symlink_metadata().is_err() {
        symlink(&python, &link).expect("link /usr/bin/python3");
    }
    let out = Command::new(&python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('stdlib'))",
        ])
        .output()
        .expect("ask python for its stdlib");
    assert!(
        out.status.success(),
        "{} cannot name its stdlib",
        python.display()
    );
    let stdlib = PathBuf::from(String::from_utf8(out.stdout).expect("UTF-8").trim());
    copy_tree(dir, &stdlib);
    // Python finds its exec prefix by this directory, even when empty.
    fs::create_dir_all(under(dir, &stdlib.join("lib-dynload"))).expect("mkdir lib-dynload");
}

/// Copies the tree at `src` (absolute) to the same path under `dir`,
/// leaving out [`PYTHON_SKIP`], `config-*` and test extension modules.
fn copy_tree(dir: &Path, src: &Path) {
    for entry in fs::read_dir(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display())) {
        let entry = entry.expect("dir entry");
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if PYTHON_SKIP.contains(&name.as_ref())
            || name.starts_with("config-")
            || name.starts_with("_test")
            || name.starts_with("xx")
        {
            continue;
        }
        let path = entry.path();
        // Follows links (Debian links sitecustomize.py into /etc).
        let Ok(meta) = fs::metadata(&path) else {
            continue; // a dangling link
        };
        if meta.is_dir() {
            copy_tree(dir, &path);
        } else if meta.is_file() {
            copy_file(&path, &under(dir, &path));
            if name.ends_with(".so") {
                add_libraries(dir, &path);
            }
        }
    }
}
