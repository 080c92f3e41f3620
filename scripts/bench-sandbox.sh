#!/usr/bin/env bash
# End-to-end benchmarks of the sandbox: the same workload natively (in a
# fresh network namespace, `unshare -n`, loopback up) and inside
# `smolvisor do --network none`, in the same run, interleaved, median of
# N repetitions each. Prints a Markdown table (also written to --out,
# target/bench-sandbox.md by default) with absolute numbers and
# sandbox/native.
#
# Rows (select with --only, comma-separated):
#   trap     getsockopt(SO_TYPE) on a TCP socket: a trapped call (ns/call)
#   syscall  getppid(): an untrapped call (ns/call)
#   bulk     iperf3 client and server in one sandbox over 127.0.0.1 (Gbit/s)
#   conn     connect+accept+close loop in one process (conn/s), twice:
#            the client's socket closed first, then the server's first
#   nginx    nginx, 100-byte file, keep-alive, wrk -t2 -c32 (req/s)
#   mem      Sentry VmRSS idle and with 1,000 open connections (KiB)
#
# Options:
#   --quick            1 repetition, short durations
#   --only LIST        rows to run, e.g. --only trap,bulk
#   --reps N           repetitions per side (default 3)
#   --smolvisor PATH   binary to test (default target/release/smolvisor)
#   --no-build         do not run `cargo build --release -p smolvisor` first
#   --keep             keep the temporary directory (logs of every run)
#   --out FILE         where to write the table (default target/bench-sandbox.md)
#
# Needs root (unshare -n, and smolvisor itself). Installs iperf3, wrk,
# nginx-light, curl, gcc, iproute2 with apt-get when missing. Exit status is
# non-zero when any row failed (shown as FAILED, with the reason below the
# table).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)

ALL_ROWS=(trap syscall bulk conn nginx mem)
ROWS=("${ALL_ROWS[@]}")
REPS=3
QUICK=0
BUILD=1
KEEP=0
SV="$REPO/target/release/smolvisor"
OUT_MD="$REPO/target/bench-sandbox.md"

usage() { sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --only) shift; IFS=, read -r -a ROWS <<<"${1:-}" ;;
        --only=*) IFS=, read -r -a ROWS <<<"${1#--only=}" ;;
        --reps) shift; REPS=${1:-} ;;
        --reps=*) REPS=${1#--reps=} ;;
        --smolvisor) shift; SV=${1:-} ;;
        --smolvisor=*) SV=${1#--smolvisor=} ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        --out) shift; OUT_MD=${1:-} ;;
        --out=*) OUT_MD=${1#--out=} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-sandbox: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for r in "${ROWS[@]}"; do
    case " ${ALL_ROWS[*]} " in
        *" $r "*) ;;
        *) echo "bench-sandbox: unknown row '$r' (rows: ${ALL_ROWS[*]})" >&2; exit 2 ;;
    esac
done
case "$REPS" in ''|*[!0-9]*|0) echo "bench-sandbox: --reps needs a positive integer" >&2; exit 2 ;; esac
case "$SV" in /*) ;; *) SV="$REPO/$SV" ;; esac
case "$OUT_MD" in /*) ;; *) OUT_MD="$REPO/$OUT_MD" ;; esac

if [ "$QUICK" = 1 ]; then
    REPS=1
    TRAP_N=20000 SYSCALL_N=200000 BULK_SECS=2 CONN_SECS=1 NGINX_SECS=2
else
    TRAP_N=200000 SYSCALL_N=2000000 BULK_SECS=5 CONN_SECS=3 NGINX_SECS=5
fi
MEM_CONNS=1000
BULK_PORT=5201
NGINX_PORT=8080

log() { echo "bench-sandbox: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (unshare -n, smolvisor do)"
    exit 2
fi

# --- packages --------------------------------------------------------------

ensure_packages() {
    local missing=() pkg
    for pkg in iperf3 wrk curl gcc libc6-dev iproute2 util-linux procps coreutils; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
            missing+=("$pkg")
        fi
    done
    if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
        missing+=(nginx-light)
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        missing+=(python3)
    fi
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing missing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"
}
ensure_packages || { log "package installation failed"; exit 2; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# --- scratch directory and helpers -----------------------------------------

T=$(mktemp -d /tmp/bench-sandbox.XXXXXX)
chmod 755 "$T"
cleanup() {
    if [ "$KEEP" = 1 ]; then log "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
mkdir -p "$T/bin" "$T/log" "$T/www"

for src in trap connrate manyconn; do
    if ! cc -O2 -Wall -o "$T/bin/$src" "$REPO/benches/sandbox/$src.c"; then
        log "cannot compile benches/sandbox/$src.c"
        exit 2
    fi
done

# Native runs: a fresh network namespace with loopback up (the host netns
# has only a handful of ephemeral ports).
cat >"$T/bin/lo-up" <<'EOF'
#!/bin/sh
ip link set lo up || { echo "lo-up: ip link set lo up failed" >&2; exit 125; }
exec "$@"
EOF

# iperf3 server and client in one namespace / sandbox; JSON on stdout.
cat >"$T/bin/bulk.sh" <<'EOF'
#!/bin/sh
port=$1 secs=$2
iperf3 -s -1 -p "$port" >/dev/null &
srv=$!
i=0
while :; do
    # iperf3 3.12 exits 0 even when it cannot connect: look for "error".
    out=$(iperf3 -c 127.0.0.1 -p "$port" -t "$secs" -J) &&
        ! printf '%s' "$out" | grep -q '"error":' && break
    i=$((i + 1))
    if [ "$i" -ge 50 ] || ! kill -0 "$srv" 2>/dev/null; then
        printf '%s\n' "$out"
        echo "bulk.sh: iperf3 client failed" >&2
        kill "$srv" 2>/dev/null
        exit 1
    fi
    sleep 0.1
done
printf '%s\n' "$out"
wait "$srv" || { echo "bulk.sh: iperf3 server exited $?" >&2; exit 1; }
EOF

# nginx (config in $T) and wrk in one namespace / sandbox.
head -c 99 /dev/zero | tr '\0' 'x' >"$T/www/index.html"
echo >>"$T/www/index.html"
cat >"$T/nginx.conf" <<EOF
user root;
worker_processes 1;
daemon off;
pid $T/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path $T/nginx-body;
    proxy_temp_path $T/nginx-proxy;
    fastcgi_temp_path $T/nginx-fastcgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $T/www;
        location / { }
    }
}
EOF
cat >"$T/bin/nginx.sh" <<EOF
#!/bin/sh
secs=\$1
url=http://127.0.0.1:$NGINX_PORT/index.html
"$NGINX" -p "$T" -c "$T/nginx.conf" -e stderr &
ngx=\$!
i=0
until size=\$(curl -fsS -o /dev/null -w '%{size_download}' "\$url" 2>/dev/null); do
    i=\$((i + 1))
    if [ "\$i" -ge 100 ] || ! kill -0 "\$ngx" 2>/dev/null; then
        echo "nginx.sh: nginx did not answer on \$url" >&2
        kill "\$ngx" 2>/dev/null
        exit 1
    fi
    sleep 0.1
done
if [ "\$size" != 100 ]; then
    echo "nginx.sh: GET \$url returned \$size bytes, want 100" >&2
    kill "\$ngx"
    exit 1
fi
wrk -t2 -c32 -d"\${secs}s" "\$url"
rc=\$?
kill "\$ngx"
wait "\$ngx"
exit \$rc
EOF
chmod +x "$T/bin/"*.sh "$T/bin/lo-up"

run_native() { timeout -k 5 "$1" unshare -n -- "$T/bin/lo-up" "${@:2}" </dev/null; }
run_sandbox() { timeout -k 5 "$1" "$SV" do --network none -- "${@:2}" </dev/null; }
run_side() { # SIDE TIMEOUT CMD...
    local side=$1
    shift
    if [ "$side" = native ]; then run_native "$@"; else run_sandbox "$@"; fi
}

# --- one measurement per function: prints the number on stdout -------------
# Each takes SIDE (native|sandbox) and LOGPREFIX; raw output goes to
# LOGPREFIX.out / .err. Returns non-zero (with a reason in LOGPREFIX.why)
# when the run failed or its output is missing.

fail() { echo "$2" >"$1.why"; return 1; }

check_run() { # LOGPREFIX RC
    local lp=$1 rc=$2
    local what="exit status $rc"
    case "$rc" in
        0) return 0 ;;
        124) what="timed out (exit 124)" ;;
        137) what="exit status 137 = SIGKILL (timeout -k after the limit, or killed earlier)" ;;
        *) [ "$rc" -gt 128 ] && what+=" = signal $((rc - 128)) ($(kill -l $((rc - 128)) 2>/dev/null))" ;;
    esac
    fail "$lp" "$what; stderr (last lines, $(wc -l <"$lp.err") in all): $(tail -n 3 "$lp.err" | cut -c1-200 | tr '\n' ' ')"
    return 1
}

m_ns_per_call() { # SIDE LP MODE N
    run_side "$1" 120 "$T/bin/trap" "$3" "$4" >"$2.out" 2>"$2.err"
    check_run "$2" $? || return 1
    local v
    v=$(awk '$1 == "ns_per_call" { print $2 }' "$2.out")
    [ -n "$v" ] || { fail "$2" "no ns_per_call in output"; return 1; }
    echo "$v"
}
m_trap() { m_ns_per_call "$1" "$2" getsockopt "$TRAP_N"; }
m_syscall() { m_ns_per_call "$1" "$2" getppid "$SYSCALL_N"; }

m_bulk() {
    run_side "$1" $((BULK_SECS + 60)) sh "$T/bin/bulk.sh" "$BULK_PORT" "$BULK_SECS" >"$2.out" 2>"$2.err"
    check_run "$2" $? || return 1
    local v
    v=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
if "error" in d:
    sys.exit("iperf3: " + d["error"])
r = d["end"]["sum_received"]
if r["bytes"] <= 0:
    sys.exit("iperf3: no bytes received")
print("%.3f" % (r["bits_per_second"] / 1e9))
' "$2.out" 2>>"$2.err")
    [ -n "$v" ] || { fail "$2" "no throughput in iperf3 output: $(tail -n 1 "$2.err")"; return 1; }
    echo "$v"
}

m_conn() { # SIDE LP ORDER
    run_side "$1" $((CONN_SECS + 60)) "$T/bin/connrate" "$CONN_SECS" "$3" >"$2.out" 2>"$2.err"
    check_run "$2" $? || return 1
    local v
    v=$(awk '$5 == "conn_per_s" && $2 > 0 { print $6 }' "$2.out")
    [ -n "$v" ] || { fail "$2" "no conn_per_s in output"; return 1; }
    echo "$v"
}
m_connc() { m_conn "$1" "$2" client-first; }
m_conns() { m_conn "$1" "$2" server-first; }

m_nginx() {
    run_side "$1" $((NGINX_SECS + 60)) sh "$T/bin/nginx.sh" "$NGINX_SECS" >"$2.out" 2>"$2.err"
    check_run "$2" $? || return 1
    if grep -q 'Non-2xx' "$2.out"; then
        fail "$2" "wrk: $(grep 'Non-2xx' "$2.out")"
        return 1
    fi
    local v
    v=$(awk '$1 == "Requests/sec:" { print $2 }' "$2.out")
    [ -n "$v" ] && awk -v v="$v" 'BEGIN { exit !(v > 0) }' || { fail "$2" "no Requests/sec in wrk output"; return 1; }
    if grep -q 'Socket errors' "$2.out"; then
        log "note: $(basename "$2"): wrk $(grep 'Socket errors' "$2.out" | sed 's/^ *//')"
        echo "wrk $(grep 'Socket errors' "$2.out" | sed 's/^ *//')" >"$2.note"
    fi
    echo "$v"
}

rss_kib() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status" 2>/dev/null; }

# Sandbox only: Sentry (the smolvisor process we started) VmRSS when the
# guest is idle and when it holds MEM_CONNS connections. Prints
# "idle loaded per_conn".
m_mem() {
    local side=$1 lp=$2
    [ "$side" = sandbox ] || { fail "$lp" "sandbox only"; return 1; }
    rm -f "$T/mem.in" "$T/mem.out"
    mkfifo "$T/mem.in" "$T/mem.out"
    timeout -k 5 120 "$SV" do --network none -- "$T/bin/manyconn" "$MEM_CONNS" \
        <"$T/mem.in" >"$T/mem.out" 2>"$lp.err" &
    local tpid=$! line="" sentry="" idle="" loaded="" rc
    exec 3>"$T/mem.in" 4<"$T/mem.out"
    if ! read -r -t 60 -u 4 line || [ "$line" != IDLE ]; then
        fail "$lp" "no IDLE from guest (got '$line')"
    else
        sentry=$(pgrep -P "$tpid" | head -n 1)
        if [ -z "$sentry" ] || [ "$(readlink "/proc/$sentry/exe")" != "$(readlink -f "$SV")" ]; then
            fail "$lp" "cannot find the smolvisor process (child of timeout $tpid: '$sentry')"
            sentry=""
        else
            sleep 0.5
            idle=$(rss_kib "$sentry")
            echo go >&3
            if ! read -r -t 110 -u 4 line || [ "$line" != "READY $MEM_CONNS" ]; then
                fail "$lp" "no READY from guest (got '$line')"
            else
                sleep 0.5
                loaded=$(rss_kib "$sentry")
            fi
        fi
    fi
    exec 3>&- 4<&-
    wait "$tpid"
    rc=$?
    echo "sentry=$sentry idle=$idle loaded=$loaded" >"$lp.out"
    if [ -f "$lp.why" ]; then
        echo "; smolvisor exit status $rc: $(tail -n 3 "$lp.err" | tr '\n' ' ')" >>"$lp.why"
        tr -s '\n' ' ' <"$lp.why" >"$lp.why1" && mv "$lp.why1" "$lp.why"
        return 1
    fi
    check_run "$lp" "$rc" || return 1
    [ -n "$idle" ] && [ -n "$loaded" ] || { fail "$lp" "VmRSS not readable"; return 1; }
    echo "$idle $loaded $(awk -v a="$idle" -v b="$loaded" -v n="$MEM_CONNS" 'BEGIN { printf "%.2f", (b - a) / n }')"
}

# --- driver ------------------------------------------------------------------

median() { # numbers as arguments
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) exit 1
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

declare -A SAMPLES VAL WHY NOTE

SANDBOX_OK=1
BUILD_NOTE=""
SANDBOX_WHY=""
prepare_sandbox() {
    if [ "$BUILD" = 1 ] && [ "$SV" = "$REPO/target/release/smolvisor" ]; then
        log "cargo build --release -p smolvisor"
        if ! cargo build --release -p smolvisor >"$T/log/build.log" 2>&1; then
            tail -n 5 "$T/log/build.log" >&2
            log "build failed; testing the binary already there, if any"
            BUILD_NOTE="**\`cargo build --release -p smolvisor\` failed; the binary tested is an older build.** "
        fi
    fi
    if [ ! -x "$SV" ]; then
        SANDBOX_OK=0
        SANDBOX_WHY="$SV not found"
        return
    fi
    if ! timeout -k 5 60 "$SV" do --network none -- true >"$T/log/smoke.out" 2>"$T/log/smoke.err"; then
        SANDBOX_OK=0
        SANDBOX_WHY="smoke test \`smolvisor do --network none -- true\` failed: $(tail -n 2 "$T/log/smoke.err" | tr '\n' ' ')"
    fi
}

measure_row() { # ROW
    local row=$1 rep side v lp ok left t0 secs
    local -a order
    for rep in $(seq 1 "$REPS"); do
        # Alternate which side goes first, so drift hits both alike.
        if [ $((rep % 2)) = 1 ]; then order=(native sandbox); else order=(sandbox native); fi
        [ "$row" = mem ] && order=(sandbox)
        for side in "${order[@]}"; do
            [ -n "${WHY[$row.$side]:-}" ] && continue
            if [ "$side" = sandbox ] && [ "$SANDBOX_OK" = 0 ]; then
                WHY[$row.$side]=$SANDBOX_WHY
                continue
            fi
            lp="$T/log/$row.$side.$rep"
            log "$row $side rep $rep/$REPS"
            t0=$(date +%s.%N)
            v=$("m_$row" "$side" "$lp")
            ok=$?
            secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
            # Processes of ours (their command line names our scratch
            # directory) that outlived the run: report, then end them.
            left=$(pgrep -d ' ' -f -- "$T/")
            if [ -n "$left" ]; then
                sleep 1
                left=$(pgrep -d ' ' -f -- "$T/")
            fi
            if [ -n "$left" ]; then
                echo "left behind: $(ps -o pid=,stat=,args= -p "${left// /,}" | tr -s ' \n' ' ')" >>"$lp.note"
                log "  $(cat "$lp.note")"
                # shellcheck disable=SC2086
                kill -KILL $left 2>/dev/null
            fi
            if [ "$ok" = 0 ]; then
                SAMPLES[$row.$side]+="${SAMPLES[$row.$side]:+ }$v"
                [ -f "$lp.note" ] && NOTE[$row.$side]+="rep $rep: $(cat "$lp.note"); "
                log "  -> $v (${secs}s)"
            else
                WHY[$row.$side]="rep $rep, after ${secs}s: $(cat "$lp.why" 2>/dev/null || echo 'failed')"
                [ -f "$lp.note" ] && WHY[$row.$side]+=" [$(tr '\n' ' ' <"$lp.note")]"
                log "  -> FAILED: ${WHY[$row.$side]}"
                if [ -s "$lp.err" ]; then tail -n 5 "$lp.err" | sed 's/^/     | /' >&2; fi
            fi
        done
    done
    for side in native sandbox; do
        [ -n "${WHY[$row.$side]:-}" ] && continue
        [ -n "${SAMPLES[$row.$side]:-}" ] || continue
        if [ "$row" = mem ]; then
            local idle loaded per
            idle=$(median $(printf '%s\n' ${SAMPLES[$row.$side]} | awk 'NR % 3 == 1'))
            loaded=$(median $(printf '%s\n' ${SAMPLES[$row.$side]} | awk 'NR % 3 == 2'))
            per=$(median $(printf '%s\n' ${SAMPLES[$row.$side]} | awk 'NR % 3 == 0'))
            VAL[mem_idle.$side]=$idle VAL[mem_loaded.$side]=$loaded VAL[mem_per.$side]=$per
        else
            # shellcheck disable=SC2086
            VAL[$row.$side]=$(median ${SAMPLES[$row.$side]})
        fi
    done
}

fmt() { # NUMBER DECIMALS
    awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f", d, v }'
}

ANY_FAILED=0
TABLE=""
DETAILS=""

# ROW KEY LABEL UNIT DECIMALS TARGET(min ratio or "-")
table_row() {
    local row=$1 key=$2 label=$3 unit=$4 dec=$5 target=$6
    local n s ratio="—" tgt="—" ncell scell
    n=${VAL[$key.native]:-} s=${VAL[$key.sandbox]:-}
    if [ "$row" = mem ]; then
        ncell="n/a"
    elif [ -n "$n" ]; then
        ncell=$(fmt "$n" "$dec")
    else
        ncell="FAILED"
    fi
    if [ -n "$s" ]; then scell=$(fmt "$s" "$dec"); else scell="FAILED"; fi
    if [ -n "$n" ] && [ -n "$s" ]; then
        ratio=$(awk -v n="$n" -v s="$s" 'BEGIN { if (n > 0) printf "%.3f", s / n; else print "—" }')
    fi
    if [ "$target" != - ]; then
        if [ "$ratio" = "—" ]; then
            tgt="≥ $target"
        elif awk -v r="$ratio" -v t="$target" 'BEGIN { exit !(r >= t) }'; then
            tgt="≥ $target: met"
        else
            tgt="≥ $target: **not met**"
        fi
    fi
    if [ "$ncell" = FAILED ] || [ "$scell" = FAILED ]; then ANY_FAILED=1; fi
    TABLE+="| $label | $unit | $ncell | $scell | $ratio | $tgt |"$'\n'
}

row_details() { # ROW LABEL
    local row=$1 label=$2 side
    for side in native sandbox; do
        [ "$row" = mem ] && [ "$side" = native ] && continue
        if [ -n "${WHY[$row.$side]:-}" ]; then
            DETAILS+="- $label, $side: FAILED — ${WHY[$row.$side]}"$'\n'
        elif [ -n "${SAMPLES[$row.$side]:-}" ]; then
            DETAILS+="- $label, $side samples: ${SAMPLES[$row.$side]}${NOTE[$row.$side]:+ (${NOTE[$row.$side]%; })}"$'\n'
        fi
    done
}

selected() { case " ${ROWS[*]} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

main() {
    LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
    prepare_sandbox
    [ "$SANDBOX_OK" = 1 ] || log "sandbox unusable: $SANDBOX_WHY"
    local r
    for r in "${ALL_ROWS[@]}"; do
        if [ "$r" = conn ]; then
            if selected conn; then measure_row connc; measure_row conns; fi
        else
            selected "$r" && measure_row "$r"
        fi
    done

    selected trap && table_row trap trap "trap round trip: getsockopt(SO_TYPE)" "ns/call" 0 - \
        && row_details trap "trap"
    selected syscall && table_row syscall syscall "untrapped syscall: getppid" "ns/call" 0 - \
        && row_details syscall "getppid"
    selected bulk && table_row bulk bulk "TCP bulk over 127.0.0.1 (iperf3, ${BULK_SECS}s)" "Gbit/s" 2 0.6 \
        && row_details bulk "bulk"
    if selected conn; then
        table_row connc connc "connect+accept+close, client closes first (${CONN_SECS}s)" "conn/s" 0 0.4
        table_row conns conns "connect+accept+close, server closes first (${CONN_SECS}s)" "conn/s" 0 0.4
        row_details connc "conn, client first"
        row_details conns "conn, server first"
    fi
    selected nginx && table_row nginx nginx "nginx 100 B keep-alive, wrk -t2 -c32 -d${NGINX_SECS}s" "req/s" 0 0.5 \
        && row_details nginx "nginx"
    if selected mem; then
        table_row mem mem_idle "Sentry VmRSS, idle guest" "KiB" 0 -
        table_row mem mem_loaded "Sentry VmRSS, $MEM_CONNS open connections" "KiB" 0 -
        table_row mem mem_per "Sentry VmRSS per connection (both ends)" "KiB/conn" 2 -
        row_details mem "mem (idle loaded per-conn)"
    fi

    local rev
    rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$REPO" diff --quiet HEAD 2>/dev/null || rev+="+dirty"
    local md
    md="# smolvisor sandbox benchmarks"$'\n\n'
    md+="$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r), $(nproc) CPUs, commit $rev, "
    md+="median of $REPS run(s) per side, native and sandbox interleaved, "
    md+="load average before/after: $LOAD_BEFORE / $(cut -d' ' -f1-3 /proc/loadavg). "
    md+="Native = \`unshare -n\` with lo up; sandbox = \`smolvisor do --network none\`. $BUILD_NOTE"$'\n\n'
    md+="| benchmark | unit | native | sandbox | sandbox/native | target |"$'\n'
    md+="|---|---|---:|---:|---:|---|"$'\n'
    md+="$TABLE"$'\n'
    md+="Higher is better for Gbit/s, conn/s and req/s; for ns/call lower is better, so there the ratio is the slowdown. "
    md+="Memory is the Sentry's (the \`smolvisor\` process) VmRSS; each connection is two TCP endpoints in the Sentry (client and server), both held by one guest process. "
    md+="Close order in the conn rows: natively, when the client closes first its ports stay in TIME_WAIT and Linux's connect() spends most of its time searching for a free ephemeral port (\`__inet_hash_connect\`), which caps native conn/s; the server-first row avoids that."$'\n\n'
    md+="Samples and failures:"$'\n\n'"$DETAILS"
    if selected trap && [ -n "${VAL[trap.native]:-}" ] && [ -n "${VAL[trap.sandbox]:-}" ]; then
        md+=$'\n'"Trap overhead (sandbox − native getsockopt): $(awk -v n="${VAL[trap.native]}" -v s="${VAL[trap.sandbox]}" 'BEGIN { printf "%.2f", (s - n) / 1000 }') µs per call."$'\n'
    fi
    printf '%s' "$md"
    mkdir -p "$(dirname "$OUT_MD")"
    printf '%s' "$md" >"$OUT_MD"
    log "table written to ${OUT_MD#"$REPO"/}"
    if [ "$ANY_FAILED" = 1 ]; then
        log "some rows FAILED"
        return 1
    fi
}

main
