#!/usr/bin/env bash
# The one demo command: builds smolvisor and runs real programs in sandboxes
# whose sockets are served by the user-space netstack. First the default nat
# network: the guest's interfaces, a host service reached through the
# gateway, a port published from the host into the guest, and a pcapng
# capture of it all read back with tshark. Then a loopback-only sandbox: a
# Python web server and curl inside, and no trace of either on the host.
# Needs root (namespaces, mounts, seccomp listener).
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
trap 'rm -rf "$work"; [ -n "${host_srv:-}" ] && kill "$host_srv" 2>/dev/null' EXIT
echo "hello from inside the sandbox" >"$work/index.html"
mkdir "$work/host" && echo "hello from the host's loopback" >"$work/host/index.html"

# 1. nat, the default: the guest's eth0 sits behind a user-mode gateway in
# the Sentry. A port is published into the guest, the host's loopback is
# opened to it (--allow-host-loopback: 10.0.2.2 is the host's 127.0.0.1),
# and every frame is captured.
(cd "$work/host" && exec python3 -m http.server 18081 --bind 127.0.0.1 >/dev/null 2>&1) &
host_srv=$!
echo "==> inside: smolvisor do -p 127.0.0.1:18080:8000 --allow-host-loopback --pcap-log demo.pcapng -- sh -c '...'"
cd "$work"
"${sudo[@]}" "$bin" do -p 127.0.0.1:18080:8000 --allow-host-loopback \
    --pcap-log "$work/demo.pcapng" -- sh -c '
    echo "--- interfaces and routes the guest sees:"
    ip -br addr
    ip route
    echo "--- curl http://10.0.2.2:18081/ (the host'"'"'s 127.0.0.1:18081, through the gateway):"
    for _ in $(seq 50); do curl -s http://10.0.2.2:18081/ && break; sleep 0.1; done
    echo "--- serving index.html on the guest'"'"'s port 8000 for 3 s"
    timeout 3 python3 -m http.server 8000 >/dev/null 2>&1
    true
' &
guest=$!
echo "--- from the host: curl http://127.0.0.1:18080/index.html (published into the guest):"
for _ in $(seq 50); do
    curl -s http://127.0.0.1:18080/index.html && break
    sleep 0.1
done
wait "$guest"
echo "--- the capture (tshark -z conv,tcp):"
if command -v tshark >/dev/null; then
    tshark -r "$work/demo.pcapng" -q -z conv,tcp 2>/dev/null | sed -n '/<->/p'
fi

# 2. --network none: loopback only; the guest's sockets never reach the host kernel.
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
