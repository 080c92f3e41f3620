#!/usr/bin/env bash
# The one test command: system packages, formatting, lints, tests, benches
# (compiled, not run). Runs as root in CI; elsewhere apt-get needs sudo only
# when a package is actually missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages the build and the tests need: libseccomp for the guest
# filter; ip/ss, curl, ping, sysctl, iperf3 and python3 for the end-to-end
# tests (ping also for the kernel's side of the TAP test); a C compiler for
# their guest programs; tshark (with capinfos) to read back pcapng captures;
# a real Docker engine and busybox for the image of the Docker tests (and
# wrk for scripts/bench-docker.sh); podman and catatonit, containerd (and
# its ctr) for the pod tests.
APT_PACKAGES=(iproute2 iputils-ping procps iperf3 python3 libseccomp-dev pkg-config curl gcc
    libc6-dev tshark docker.io busybox-static wrk podman catatonit containerd)

ensure_apt_packages() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    echo "==> installing missing packages: ${missing[*]}"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

step() {
    echo "==> $*"
    "$@"
}

main() {
    ensure_apt_packages
    step cargo fmt --all --check
    step cargo clippy --workspace --all-targets -- -D warnings
    step cargo bench --workspace --no-run
    # nextest does not run doctests.
    step cargo test --workspace --doc --release
    # Every coverage-guided fuzz target for a bounded time (nightly).
    step bash scripts/fuzz.sh --time 30
    # The test run comes last, so its summary is the closing line.
    if cargo nextest --version >/dev/null 2>&1; then
        step cargo nextest run --workspace --release
    else
        step cargo test --workspace --release
    fi
}

# Sourcing the script (e.g. to call ensure_apt_packages alone) runs nothing.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
