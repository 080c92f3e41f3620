#!/usr/bin/env bash
# Docker with smolvisor against Docker with runc, in one run: a private
# dockerd (its own network namespace, mount namespace, data and exec roots
# under /tmp/smvb-PID, cgroup parent smvb-PID; the host's interfaces and
# iptables are never touched) with smolvisor registered, and an image
# imported from a root file system made here (busybox-static, iperf3 with
# its libraries, /www/index.html). The rows alternate between the runtimes
# so that machine noise hits both alike.
#
#   start    `docker run --rm IMAGE true`, start to exit (median of --reps)
#   iperf    iperf3 from dockerd's namespace (the host side of docker0) to
#            `iperf3 -s` in a container at its address: up (host sends)
#            and down (-R), --time S each, median of --rounds
#   wrk      wrk -t2 -c32 against busybox httpd in a container (a 612-byte
#            page; busybox httpd closes each connection, so this is a
#            connection rate as much as a request rate), median of --rounds
#   nginx    wrk -t2 -c32 against nginx in a container, same page, with
#            keep-alive: a request rate (skipped when nginx is not installed)
#
# Options:
#   --reps N           samples of the start time per runtime (default 10)
#   --rounds N         throughput runs per runtime (default 3)
#   --time S           seconds per iperf3 / wrk run (default 5)
#   --only LIST        rows to run (start,iperf,wrk,nginx)
#   --smolvisor PATH   binary (default target/release/smolvisor)
#   --no-build         skip `cargo build --release -p smolvisor`
#   --modes LIST       smolvisor's OCI network modes to run, each a column
#                      (default sandbox, the OCI default; e.g. relay,sandbox)
#   --out FILE         where to write the table (default target/bench-docker.md)
#
# Needs root. Installs docker.io, busybox-static, iperf3, wrk, python3, curl
# and iproute2 when missing (nginx is optional: Debian nginx-light). Writes
# the table to --out as well as stdout.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
REPS=10
ROUNDS=3
SECS=5
BUILD=1
SV="$REPO/target/release/smolvisor"
ROWS=(start iperf wrk nginx)
MODES=(sandbox)
OUT="$REPO/target/bench-docker.md"

usage() { sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) shift; REPS=$1 ;;
        --rounds) shift; ROUNDS=$1 ;;
        --time) shift; SECS=$1 ;;
        --only) shift; IFS=, read -r -a ROWS <<<"$1" ;;
        --smolvisor) shift; SV=$1 ;;
        --no-build) BUILD=0 ;;
        --modes) shift; IFS=, read -r -a MODES <<<"$1" ;;
        --out) shift; OUT=$1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-docker: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "bench-docker: needs root" >&2; exit 2; }
want() { [[ " ${ROWS[*]} " == *" $1 "* ]]; }

# shellcheck source=scripts/test.sh
source "$REPO/scripts/test.sh"
set +e
APT_PACKAGES=(docker.io busybox-static iperf3 wrk python3 iproute2 curl)
ensure_apt_packages
if [ "$BUILD" = 1 ]; then
    cargo build --release -q -p smolvisor || exit 1
fi
SV=$(realpath "$SV")

# Debian's client matches Debian's daemon; a newer one may be first in PATH.
DOCKER_BIN=docker
[ -x /usr/bin/docker ] && DOCKER_BIN=/usr/bin/docker
T=/tmp/smvb$$
NS=smolvisor-bench-docker-$$
CG=smvb-$$
IMAGE=smolvisor-bench:1
RUNTIMES=()
for m in "${MODES[@]}"; do RUNTIMES+=("smolvisor-$m"); done
RUNTIMES+=(runc)
export DOCKER_CONFIG=$T/client
dk() { timeout 120 "$DOCKER_BIN" -H "unix://$T/docker.sock" "$@"; }
in_ns() { ip netns exec "$NS" "$@"; }

cleanup() {
    if [ -S "$T/docker.sock" ]; then
        ids=$(dk ps -aq 2>/dev/null)
        [ -n "$ids" ] && dk rm -f $ids >/dev/null 2>&1
    fi
    if [ -n "${DOCKERD:-}" ]; then
        kill "$DOCKERD" 2>/dev/null
        for _ in $(seq 200); do kill -0 "$DOCKERD" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$DOCKERD" 2>/dev/null
    fi
    # Shims and runtimes name the directory on their command lines.
    for p in /proc/[0-9]*; do
        if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q "$T/"; then
            kill -9 "${p#/proc/}" 2>/dev/null
        fi
    done
    for h in /sys/fs/cgroup/*/"$CG"; do
        [ -d "$h" ] || continue
        find "$h" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null
        find "$h" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$NS" 2>/dev/null
    grep -o " $T/[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

# ---- the image: busybox, iperf3 and their libraries, a page to serve
R=$T/rootfs
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,root,proc,sys,dev,tmp,www} "$DOCKER_CONFIG" || exit 1
chmod 1777 "$R/tmp"
BB=$(command -v busybox)
cp "$BB" "$R/bin/busybox"
for a in $("$BB" --list-full); do
    [ "${a##*/}" = busybox ] || [ -e "$R/$a" ] || ln -s /bin/busybox "$R/$a"
done
add_program() {
    local f lib
    f=$(realpath "$1")
    mkdir -p "$R$(dirname "$1")" && cp "$f" "$R$1"
    for lib in $(ldd "$f" | grep -o '/[^ ]*'); do
        [ -e "$R$lib" ] || { mkdir -p "$R$(dirname "$lib")" && cp "$(realpath "$lib")" "$R$lib"; }
    done
}
add_program "$(command -v iperf3)"
NGINX=$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; })
if [ -n "$NGINX" ]; then
    add_program "$NGINX"
    cat >"$R/etc/bench-nginx.conf" <<'EOF'
user root;
worker_processes 1;
daemon off;
pid /tmp/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path /tmp/nginx-body;
    proxy_temp_path /tmp/nginx-proxy;
    fastcgi_temp_path /tmp/nginx-fastcgi;
    uwsgi_temp_path /tmp/nginx-uwsgi;
    scgi_temp_path /tmp/nginx-scgi;
    server {
        listen 80;
        root /www;
        location / { }
    }
}
EOF
elif want nginx; then
    echo "bench-docker: nginx is not installed (Debian nginx-light): no nginx row" >&2
    ROWS=("${ROWS[@]/nginx/}")
fi
echo 'root:x:0:0:root:/root:/bin/sh' >"$R/etc/passwd"
echo 'root:x:0:' >"$R/etc/group"
python3 -c 'import sys; sys.stdout.write(("<p>smolvisor bench page</p>\n" * 22)[:612])' \
    >"$R/www/index.html"
tar -C "$R" -cf "$T/rootfs.tar" . || exit 1

# ---- dockerd in its own network and mount namespaces
ip netns add "$NS" || exit 1
ip -n "$NS" link set lo up
cat >"$T/daemon.json" <<EOF
{"runtimes": {$(for m in "${MODES[@]}"; do
    printf '"smolvisor-%s": {"path": "%s", "runtimeArgs": ["--network", "%s"]}, ' "$m" "$SV" "$m"
done | sed 's/, $//')}}
EOF
DRIVER=vfs
grep -q '\soverlay$' /proc/filesystems && DRIVER=overlay2
setsid unshare --mount --propagation slave nsenter --net="/run/netns/$NS" dockerd \
    --data-root "$T/data" --exec-root "$T/e" --pidfile "$T/docker.pid" \
    -H "unix://$T/docker.sock" --config-file "$T/daemon.json" \
    --storage-driver "$DRIVER" --cgroup-parent "$CG" \
    >"$T/dockerd.log" 2>&1 </dev/null &
DOCKERD=$!
for _ in $(seq 300); do dk version >/dev/null 2>&1 && break; sleep 0.1; done
dk version >/dev/null 2>&1 || { echo "bench-docker: dockerd did not start:" >&2; tail -20 "$T/dockerd.log" >&2; exit 1; }
dk import -c "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin" "$T/rootfs.tar" "$IMAGE" >/dev/null || exit 1

median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "FAILED"; else print v[int((NR+1)/2)]}'; }
declare -A RES

# Starts a detached container (runtime, argv...); prints its address.
serve() {
    local rt=$1 id
    shift
    id=$(dk run -d --runtime="$rt" "$IMAGE" "$@" 2>>"$T/errors") || return 1
    dk inspect -f '{{.NetworkSettings.IPAddress}}' "$id"
}
# Waits until PORT answers at IP, from dockerd's namespace.
wait_port() {
    for _ in $(seq 100); do
        in_ns bash -c "echo >/dev/tcp/$1/$2" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
stop_all() { ids=$(dk ps -aq); [ -n "$ids" ] && dk rm -f $ids >/dev/null 2>&1; }
# wrk against a server (row, runtime, server argv...) in a container.
wrk_row() {
    local row=$1 rt=$2 ip r size
    shift 2
    ip=$(serve "$rt" "$@")
    if [ -n "$ip" ] && wait_port "$ip" 80; then
        size=$(in_ns curl -fsS -o /dev/null -w '%{size_download}' "http://$ip/index.html" 2>>"$T/errors")
        if [ "$size" = 612 ]; then
            r=$(in_ns wrk -t2 -c32 -d"${SECS}s" "http://$ip/index.html" 2>>"$T/errors" |
                awk '/^Requests\/sec:/ {print $2}')
        else
            echo "round $round: $row $rt: GET /index.html gave ${size:-nothing}, not 612 bytes" >&2
        fi
        echo "round $round: $row $rt ${r:-FAILED} req/s" >&2
        [ -n "$r" ] && RES[$row-$rt]+="$r"$'\n'
    else
        echo "round $round: $row $rt: the server did not come up" >&2
    fi
    stop_all
}

if want start; then
    for rt in "${RUNTIMES[@]}"; do dk run --rm --runtime="$rt" "$IMAGE" true >/dev/null 2>&1; done
    for i in $(seq "$REPS"); do
        for rt in "${RUNTIMES[@]}"; do
            t0=$(date +%s%N)
            if dk run --rm --runtime="$rt" "$IMAGE" true 2>>"$T/errors"; then
                ms=$(( ($(date +%s%N) - t0) / 1000000 ))
                RES[start-$rt]+="$ms"$'\n'
                echo "start $i: $rt $ms ms" >&2
            else
                echo "start $i: $rt FAILED" >&2
            fi
        done
    done
fi

for round in $(seq "$ROUNDS"); do
    for rt in "${RUNTIMES[@]}"; do
        if want iperf; then
            ip=$(serve "$rt" iperf3 -s)
            if [ -n "$ip" ] && wait_port "$ip" 5201; then
                for dir in "" "-R"; do
                    r=$(in_ns iperf3 -c "$ip" -t "$SECS" -J $dir 2>>"$T/errors" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print("%.2f" % (d["end"]["sum_received"]["bits_per_second"] / 1e9))' 2>/dev/null || echo FAILED)
                    echo "round $round: iperf3 $rt ${dir:-up} $r Gbit/s" >&2
                    [ "$r" != FAILED ] && RES[iperf$dir-$rt]+="$r"$'\n'
                done
            else
                echo "round $round: iperf3 $rt: the server did not come up" >&2
            fi
            stop_all
        fi
        want wrk && wrk_row wrk "$rt" httpd -f -p 80 -h /www
        want nginx && wrk_row nginx "$rt" "$NGINX" -p /tmp -c /etc/bench-nginx.conf -e stderr
    done
done

if [ -s "$T/errors" ]; then
    echo "bench-docker: errors (first lines):" >&2
    sort -u "$T/errors" | head -10 >&2
fi

ratio() {
    [ "$1" = FAILED ] || [ "$2" = FAILED ] && { echo -; return; }
    python3 -c "print('%.2f' % ($1 / $2))"
}
row() { # label key
    local s r line m
    r=$(printf %s "${RES[$2-runc]:-}" | median)
    line="| $1 |"
    for m in "${MODES[@]}"; do
        s=$(printf %s "${RES[$2-smolvisor-$m]:-}" | median)
        line+=" $s ($(ratio "$s" "$r")×) |"
    done
    echo "$line $r |"
}
md="Run at $(date -u '+%Y-%m-%d %H:%M UTC') on commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
md+=" (Docker $(dk version -f '{{.Server.Version}}'), $(nproc) CPUs)."$'\n\n'
head="| Docker, same run |" rule="|---|"
for m in "${MODES[@]}"; do head+=" smolvisor $m (/runc) |"; rule+="---:|"; done
md+="$head runc |"$'\n'
md+="$rule---:|"$'\n'
want start && md+="$(row "\`docker run --rm IMAGE true\`, ms (median of $REPS)" start)"$'\n'
if want iperf; then
    md+="$(row "iperf3 host → container, Gbit/s (${SECS} s, median of $ROUNDS)" iperf)"$'\n'
    md+="$(row "iperf3 container → host (-R), Gbit/s" iperf-R)"$'\n'
fi
want wrk && md+="$(row "wrk -t2 -c32, busybox httpd (a connection each), requests/s (${SECS} s, median of $ROUNDS)" wrk)"$'\n'
want nginx && md+="$(row "wrk -t2 -c32, nginx keep-alive, requests/s" nginx)"$'\n'
mkdir -p "$(dirname "$OUT")"
printf '%s' "$md" | tee "$OUT"
