#!/usr/bin/env bash
# Pods under Docker, smolvisor against runc, in a private dockerd (its own
# network and mount namespaces, data and exec roots under one directory,
# removed at the end):
#   start  `docker run --rm --network container:X IMAGE true` (the second
#          container of a pod), and `docker run --rm IMAGE true` (a first
#          one) for scale, REPS runs each, interleaved; medians in ms
#   rss    the pod's Sentry's VmRSS with 1, 2 and 10 containers (each later
#          one fetches the first's page over 127.0.0.1, then sleeps)
# Usage (root): scripts/bench-pod.sh [--reps N] [--smolvisor PATH]
# Prints a Markdown table. Not a test.
set -u

REPS=7
SV=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release/smolvisor
while [ $# -gt 0 ]; do
    case $1 in
    --reps) REPS=$2; shift 2 ;;
    --smolvisor) SV=$2; shift 2 ;;
    *) echo "usage: $0 [--reps N] [--smolvisor PATH]" >&2; exit 2 ;;
    esac
done
[ -x "$SV" ] || { echo "bench-pod: no binary at $SV (cargo build --release)" >&2; exit 1; }

T=/tmp/smvbp$$
NS=smolvisor-bench-pod-$$
CG=smvbp-$$
IMAGE=smolvisor-bench-pod:1
export DOCKER_CONFIG=$T/client
dk() { ip netns exec "$NS" docker -H "unix://$T/docker.sock" "$@"; }

cleanup() {
    dk rm -f $(dk ps -aq 2>/dev/null) >/dev/null 2>&1
    if [ -n "${DOCKERD:-}" ]; then
        kill "$DOCKERD" 2>/dev/null
        for _ in $(seq 200); do kill -0 "$DOCKERD" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$DOCKERD" 2>/dev/null
    fi
    for p in /proc/[0-9]*; do
        if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q "$T/"; then
            kill -9 "${p#/proc/}" 2>/dev/null
        fi
    done
    for h in /sys/fs/cgroup/*/"$CG" /sys/fs/cgroup/"$CG"; do
        [ -d "$h" ] || continue
        find "$h" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    ip netns del "$NS" 2>/dev/null
    grep -o " $T/[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

R=$T/rootfs
mkdir -p "$R"/{bin,proc,sys,dev,tmp,www,etc} "$DOCKER_CONFIG" || exit 1
cp /bin/busybox "$R/bin/" || exit 1
for a in sh true sleep wget httpd; do ln -s busybox "$R/bin/$a"; done
echo "bench pod page" >"$R/www/index.html"
tar -C "$R" -cf "$T/rootfs.tar" . || exit 1

ip netns add "$NS" || exit 1
ip -n "$NS" link set lo up
printf '{"runtimes": {"smolvisor": {"path": "%s"}}}\n' "$SV" >"$T/daemon.json"
DRIVER=vfs
grep -q '\soverlay$' /proc/filesystems && DRIVER=overlay2
setsid unshare --mount --propagation slave nsenter --net="/run/netns/$NS" dockerd \
    --data-root "$T/data" --exec-root "$T/e" --pidfile "$T/docker.pid" \
    -H "unix://$T/docker.sock" --config-file "$T/daemon.json" \
    --storage-driver "$DRIVER" --cgroup-parent "$CG" \
    >"$T/dockerd.log" 2>&1 </dev/null &
DOCKERD=$!
for _ in $(seq 300); do dk version >/dev/null 2>&1 && break; sleep 0.1; done
dk version >/dev/null 2>&1 || { echo "bench-pod: dockerd did not start" >&2; tail -20 "$T/dockerd.log" >&2; exit 1; }
dk import -c "ENV PATH=/bin" "$T/rootfs.tar" "$IMAGE" >/dev/null || exit 1

median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "FAILED"; else print v[int((NR+1)/2)]}'; }
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1 || return 1; e=$(date +%s%N); echo $(((e - s) / 1000000)); }

declare -A FIRST SECOND
for rt in runc smolvisor; do
    dk run -d --runtime="$rt" --name "pod-$rt" "$IMAGE" httpd -f -p 80 -h /www >/dev/null || exit 1
done
for _ in $(seq "$REPS"); do
    for rt in runc smolvisor; do
        FIRST[$rt]+="$(ms dk run --rm --runtime="$rt" "$IMAGE" true) "
        SECOND[$rt]+="$(ms dk run --rm --runtime="$rt" --network "container:pod-$rt" "$IMAGE" true) "
    done
done

# The Sentry of the smolvisor pod, from its state.
STATE=$(ls -d "$T"/e/runtime-runc/moby 2>/dev/null || ls -d "$T"/e/runtime-*/moby | head -1)
X=$(dk inspect -f '{{.Id}}' pod-smolvisor)
SENTRY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sentry_pid"])' "$STATE/$X/smolvisor.json")
rss() { awk '/^VmRSS/ {print $2}' "/proc/$SENTRY/status"; }
declare -A RSS
RSS[1]=$(rss)
for n in $(seq 2 10); do
    dk run -d --runtime=smolvisor --network container:pod-smolvisor "$IMAGE" \
        sh -c 'wget -qO- http://127.0.0.1/index.html >/dev/null && sleep 1000' >/dev/null || exit 1
    sleep 0.3
    [ "$n" = 2 ] && RSS[2]=$(rss)
done
RSS[10]=$(rss)
SENTRIES=$(for p in /proc/[0-9]*; do
    [ "$(cat "$p/comm" 2>/dev/null)" = smolvisor-sentr ] || continue
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q "$T/" && echo "${p#/proc/}"
done | wc -l)

echo "| measure | runc | smolvisor |"
echo "|---|---|---|"
printf '| first container, docker run --rm true (ms, median of %s) | %s | %s |\n' "$REPS" \
    "$(echo "${FIRST[runc]}" | tr ' ' '\n' | grep . | median)" \
    "$(echo "${FIRST[smolvisor]}" | tr ' ' '\n' | grep . | median)"
printf '| second container, --network container:X true (ms, median of %s) | %s | %s |\n' "$REPS" \
    "$(echo "${SECOND[runc]}" | tr ' ' '\n' | grep . | median)" \
    "$(echo "${SECOND[smolvisor]}" | tr ' ' '\n' | grep . | median)"
echo
echo "| containers in the pod | Sentry VmRSS (KiB) |"
echo "|---|---|"
for n in 1 2 10; do echo "| $n | ${RSS[$n]} |"; done
echo
echo "Sentry processes (with their signal watchers) for the 10-container pod: $SENTRIES"
echo "raw first: runc ${FIRST[runc]}/ smolvisor ${FIRST[smolvisor]}"
echo "raw second: runc ${SECOND[runc]}/ smolvisor ${SECOND[smolvisor]}"
