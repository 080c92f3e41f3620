#!/usr/bin/env bash
# The one demo command: builds smolvisor and runs real programs in a sandbox
# whose sockets are served by the user-space netstack: the interfaces the
# guest sees, then curl fetching a page from a Python web server, both inside
# one sandbox. Needs root (namespaces, mounts, seccomp listener).
#
#   scripts/demo.sh              the sandbox demo
#   scripts/demo.sh --netstack   the netstack alone: 1 GiB between two stacks
#                                (further arguments: --mib N, --mtu M)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${1:-}" = "--netstack" ]; then
    shift
    exec cargo run --release -p netstack --example demo -- "$@"
fi

# The build needs libseccomp; install what is missing, as the tests do.
# shellcheck source=scripts/test.sh
source scripts/test.sh
ensure_apt_packages

cargo build --release -p smolvisor
bin="$PWD/target/release/smolvisor"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "hello from inside the sandbox" >"$work/index.html"

echo "==> inside: smolvisor do --network none -- sh -c '...'"
cd "$work"
"${sudo[@]}" "$bin" do --network none -- sh -c '
    echo "--- interfaces the guest sees (ip addr):"
    ip -br addr
    python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 &
    srv=$!
    for _ in $(seq 50); do
        curl -s -o /dev/null http://127.0.0.1:8000/ && break
        sleep 0.1
    done
    echo "--- curl http://127.0.0.1:8000/index.html:"
    curl -s http://127.0.0.1:8000/index.html
    echo "--- the connection, as the guest sees it (getpeername over the netstack):"
    python3 -c "import socket; s = socket.create_connection((\"127.0.0.1\", 8000)); print(s.getsockname(), \"->\", s.getpeername())"
    kill $srv
'
echo "==> the host's own 127.0.0.1:8000 was never used:"
if "${sudo[@]}" ss -tan | grep -q ':8000 '; then
    echo "unexpected: the host shows a socket on port 8000" >&2
    exit 1
fi
echo "ss -tan on the host shows no socket on port 8000"
