#!/usr/bin/env bash
# Throughput of the sandbox's NICs against native Linux and the usual
# user-mode networks, all in one run over one veth between two network
# namespaces made here: A (where the sandbox or the client runs) and B (the
# peer, running `iperf3 -s`). Every row is iperf3 from A's side to B, both
# directions (up: client sends; down: -R), median of N runs, the rows
# interleaved per repetition so that machine noise hits them alike. B's
# server is started afresh for every run, and a run that hangs is ended
# 30 s after its time and counts as FAILED.
#
# Rows (select with --only, comma-separated):
#   native    iperf3 -c in A, natively (the reference for every ratio)
#   nat       smolvisor do (nat, the default) -- iperf3 -c
#   pasta     pasta --config-net -- iperf3 -c   (Debian package passt)
#   slirp     iperf3 -c in a namespace behind slirp4netns --mtu 65520
#   pcap      smolvisor do --pcap-log FILE -- iperf3 -c  (nat with capture)
#   sandbox   smolvisor do --network sandbox --netns A -- iperf3 -c
#             (the sandbox takes over A's veth; A's address moves into it)
#   relay     smolvisor do --network relay --netns A -- iperf3 -c
#             (A keeps its address; the guest's flows leave as A's sockets:
#             the OCI default, where the host kernel's TCP faces the loss)
#   tap       smolvisor do --network tap:NAME --address 10.204.0.2/24
#             --gateway 10.204.0.1 -- iperf3 -c, run in A, where NAME is a
#             TAP device at 10.204.0.1/24 and A's kernel forwards between
#             it and the veth (B routes 10.204.0.0/24 back via A)
#   nat-base, sandbox-base, tap-base   the same with the --baseline binary, to
#             compare two builds in one run (rows alternate per repetition)
#
# Options:
#   --reps N           repetitions per row (default 3)
#   --time S           seconds per iperf3 run (default 5)
#   --only LIST        rows to run (native always runs)
#   --smolvisor PATH   binary (default target/release/smolvisor)
#   --no-build         skip `cargo build --release -p smolvisor`
#   --loss P           B drops TCP segments at random with probability P
#                      (0.001 is 0.1%) both ways, with iptables' statistic
#                      match (this kernel has no netem)
#   --baseline PATH    a second smolvisor binary for the *-base rows
#   --out FILE         where to write the table (default target/bench-nics.md)
#
# Needs root. Installs iperf3, passt, slirp4netns, iproute2 and iptables
# when missing. Writes the table to --out as well as stdout.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
REPO=$(pwd)
REPS=3
SECS=5
BUILD=1
SV="$REPO/target/release/smolvisor"
ROWS=(nat pasta slirp pcap sandbox relay tap)
LOSS=0
BASE=""
OUT="$REPO/target/bench-nics.md"

usage() { sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) shift; REPS=$1 ;;
        --time) shift; SECS=$1 ;;
        --only) shift; IFS=, read -r -a ROWS <<<"$1" ;;
        --smolvisor) shift; SV=$1 ;;
        --no-build) BUILD=0 ;;
        --loss) shift; LOSS=$1 ;;
        --baseline) shift; BASE=$1 ;;
        --out) shift; OUT=$1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-nics: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "bench-nics: needs root" >&2; exit 2; }

# shellcheck source=scripts/test.sh
source "$REPO/scripts/test.sh"
set +e
APT_PACKAGES=(iperf3 passt slirp4netns iproute2 iptables python3)
ensure_apt_packages
if [ "$BUILD" = 1 ]; then
    cargo build --release -q -p smolvisor || exit 1
fi

T=$(mktemp -d /tmp/bench-nics.XXXXXX)
A=bnA$$
B=bnB$$
TAP=bnt$$
cleanup() {
    [ -f "$T/iperf3.pid" ] && kill "$(cat "$T/iperf3.pid")" 2>/dev/null
    # A TAP device outlives its users: delete it before its namespace.
    ip -n "$A" link del "$TAP" 2>/dev/null
    ip netns del "$A" 2>/dev/null
    ip netns del "$B" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

ip netns add "$A" && ip netns add "$B" || exit 1
ip link add "va$$" type veth peer name "vb$$"
ip link set "va$$" netns "$A"
ip link set "vb$$" netns "$B"
ip -n "$A" addr add 10.203.0.1/24 dev "va$$"
ip -n "$B" addr add 10.203.0.2/24 dev "vb$$"
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set "va$$" up
ip -n "$B" link set "vb$$" up
# pasta looks for the interface of the default route.
ip -n "$A" route add default via 10.203.0.2
if [[ " ${ROWS[*]} " == *" tap "* || " ${ROWS[*]} " == *" tap-base "* ]]; then
    # The guest sits behind A's kernel, which routes between the TAP and
    # the veth; B knows the TAP's subnet through A.
    ip -n "$A" tuntap add dev "$TAP" mode tap || exit 1
    ip -n "$A" addr add 10.204.0.1/24 dev "$TAP"
    ip -n "$A" link set "$TAP" up
    ip netns exec "$A" sysctl -qw net.ipv4.ip_forward=1 || exit 1
    ip -n "$B" route add 10.204.0.0/24 via 10.203.0.1 || exit 1
fi
if [ "$LOSS" != 0 ]; then
    # In B, so every row (native included) crosses the same lossy hop.
    for chain in INPUT OUTPUT; do
        ip netns exec "$B" iptables -A "$chain" -p tcp -m statistic --mode random \
            --probability "$LOSS" -j DROP || exit 1
    done
fi
PEER=10.203.0.2

# A fresh `iperf3 -s` in B for every run: a client end that vanished
# without closing (a sandbox's stack ends with its guest; a lost last
# segment is then never sent again) leaves iperf3 3.12 "busy running a
# test" for the rows after it. Says so when B still holds such connections.
start_server() {
    local pid open
    if [ -f "$T/iperf3.pid" ]; then
        open=$(ip netns exec "$B" ss -Htn state established '( sport = :5201 )' | wc -l)
        [ "$open" -gt 0 ] && echo "    note: $open connection(s) still open at the server after that run" >&2
        pid=$(cat "$T/iperf3.pid")
        kill "$pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        rm -f "$T/iperf3.pid"
    fi
    ip netns exec "$B" iperf3 -s -D -B "$PEER" -I "$T/iperf3.pid" || return 1
    for _ in $(seq 50); do
        ip netns exec "$A" bash -c "echo >/dev/tcp/$PEER/5201" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# Runs `iperf3 -c` (args: row, direction flag) the way the row says; prints Gbit/s.
# A run that hangs is ended 30 s after its time, so one stuck row does not
# stall the others.
# shellcheck disable=SC1010 # `do` is smolvisor's command, not the keyword
iperf_row() {
    local row=$1 dir=$2 json="$T/$1$2.json" rc
    local client=(iperf3 -c "$PEER" -t "$SECS" -J ${dir:+"$dir"})
    local to=(timeout -k 5 $((SECS + 30)))
    case "$row" in
        native) "${to[@]}" ip netns exec "$A" "${client[@]}" ;;
        nat) "${to[@]}" ip netns exec "$A" "$SV" do -- "${client[@]}" ;;
        pcap) "${to[@]}" ip netns exec "$A" "$SV" do --pcap-log "$T/cap.pcapng" -- "${client[@]}" ;;
        pasta) "${to[@]}" ip netns exec "$A" pasta --runas 0:0 --config-net --no-map-gw -q -- "${client[@]}" ;;
        slirp) # The client's namespace is made by unshare, whose pid
               # slirp4netns needs: the timeout goes inside, around iperf3.
               rm -f "$T/slirp.inner" "$T/slirp.up" "$T/slirp.ready"
               ip netns exec "$A" unshare -n bash -c 'touch '"$T"'/slirp.inner
                   while [ ! -e '"$T"'/slirp.ready ]; do sleep 0.05; done; exec "$@"' \
                   sh "${to[@]}" "${client[@]}" &
               local inner=$! sl
               for _ in $(seq 200); do [ -e "$T/slirp.inner" ] && break; sleep 0.05; done
               ip netns exec "$A" slirp4netns --configure --mtu=65520 --disable-host-loopback \
                   --ready-fd=3 "$inner" tap0 3>"$T/slirp.up" >"$T/slirp.log" 2>&1 &
               sl=$!
               for _ in $(seq 200); do [ -s "$T/slirp.up" ] && break; sleep 0.05; done
               touch "$T/slirp.ready"
               wait "$inner"; rc=$?; kill "$sl" 2>/dev/null; wait "$sl" 2>/dev/null
               (exit "$rc") ;;
        sandbox) "${to[@]}" "$SV" do --network sandbox --netns "/run/netns/$A" -- "${client[@]}" ;;
        relay) "${to[@]}" "$SV" do --network relay --netns "/run/netns/$A" -- "${client[@]}" ;;
        tap) "${to[@]}" ip netns exec "$A" "$SV" do --network "tap:$TAP" --address 10.204.0.2/24 \
                 --gateway 10.204.0.1 -- "${client[@]}" ;;
        nat-base) "${to[@]}" ip netns exec "$A" "$BASE" do -- "${client[@]}" ;;
        sandbox-base) "${to[@]}" "$BASE" do --network sandbox --netns "/run/netns/$A" -- "${client[@]}" ;;
        tap-base) "${to[@]}" ip netns exec "$A" "$BASE" do --network "tap:$TAP" --address 10.204.0.2/24 \
                 --gateway 10.204.0.1 -- "${client[@]}" ;;
    esac >"$json" 2>"$T/$row$dir.err"
    rc=$?
    case "$rc" in
        124|137) echo "timed out after $((SECS + 30)) s (exit status $rc)" >>"$T/$row$dir.err" ;;
    esac
    python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print("%.2f" % (d["end"]["sum_received"]["bits_per_second"] / 1e9))' "$json" 2>/dev/null || echo FAILED
}

median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "FAILED"; else print v[int((NR+1)/2)]}'; }

declare -A RES
for rep in $(seq "$REPS"); do
    for row in native "${ROWS[@]}"; do
        for dir in "" "-R"; do
            start_server || echo "    note: iperf3 -s did not start in B" >&2
            r=$(iperf_row "$row" "$dir")
            echo "rep $rep: $row ${dir:-up} $r Gbit/s" >&2
            if [ "$r" = FAILED ]; then
                tail -n 3 "$T/$row$dir.err" "$T/$row$dir.json" 2>/dev/null | cut -c1-200 | sed 's/^/    | /' >&2
            fi
            [ "$r" != FAILED ] && RES[$row$dir]+="$r"$'\n'
        done
    done
done

md="Run at $(date -u '+%Y-%m-%d %H:%M UTC') on commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), TCP loss $LOSS each way${BASE:+, baseline $BASE}."$'\n\n'
md+="| path (iperf3 over a veth, ${SECS} s, median of $REPS) | up Gbit/s | ×native | down (-R) Gbit/s | ×native |"$'\n'
md+="|---|---:|---:|---:|---:|"$'\n'
nu=$(printf %s "${RES[native]:-}" | median)
nd=$(printf %s "${RES[native-R]:-}" | median)
for row in native "${ROWS[@]}"; do
    u=$(printf %s "${RES[$row]:-}" | median)
    d=$(printf %s "${RES[$row-R]:-}" | median)
    ratio() {
        if [ "$1" = FAILED ] || [ "$2" = FAILED ]; then echo -; else python3 -c "print('%.2f' % ($1 / $2))"; fi
    }
    md+="| $row | $u | $(ratio "$u" "$nu") | $d | $(ratio "$d" "$nd") |"$'\n'
done
mkdir -p "$(dirname "$OUT")"
printf '%s' "$md" | tee "$OUT"
