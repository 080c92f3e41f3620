#!/usr/bin/env bash
# Benchmarks of the Gofer (the guest's file changes): the same workload
# natively, inside `smolvisor do --network none` (the Gofer makes every
# change), and inside `smolvisor do --network none --no-gofer` (the guest
# writes its copy-on-write tree itself, as before the Gofer), in the same
# run, median of N repetitions each. Prints a Markdown table (also written
# to --out, target/bench-files.md by default).
#
# Rows:
#   open     open(O_WRONLY|O_CREAT) + close of an existing file (us/call):
#            a trapped open whose descriptor the Gofer donates
#   rename   rename(a, b) back and forth (us/call): a path mutation
#   build    unpack a 10,000-file tar of small Python modules, then
#            `python3 -m compileall -q` on it (seconds)
#
# Options:
#   --reps N           repetitions per side (default 3)
#   --only LIST        rows to run, e.g. --only open,rename
#   --smolvisor PATH   binary to test (default target/release/smolvisor)
#   --out FILE         where to write the table
#
# Needs root, cc, python3, tar.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
REPS=3
ROWS=open,rename,build
SV="$REPO/target/release/smolvisor"
OUT_MD="$REPO/target/bench-files.md"
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) shift; REPS=${1:-} ;;
        --only) shift; ROWS=${1:-} ;;
        --smolvisor) shift; SV=${1:-} ;;
        --out) shift; OUT_MD=${1:-} ;;
        -h|--help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "bench-files: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

TMP=$(mktemp -d /tmp/bench-files.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
N=20000

cat >"$TMP/loop.c" <<'EOF'
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
int main(int argc, char **argv) {
    const char *what = argv[1];
    int n = atoi(argv[2]);
    chdir(argv[3]);
    int fd = open("f", O_WRONLY | O_CREAT, 0644);
    close(fd);
    double t0 = now();
    for (int i = 0; i < n; i++) {
        if (what[0] == 'o') {
            fd = open("f", O_WRONLY | O_CREAT, 0644);
            if (fd < 0) { perror("open"); return 1; }
            close(fd);
        } else {
            if (rename(i % 2 ? "g" : "f", i % 2 ? "f" : "g")) { perror("rename"); return 1; }
        }
    }
    printf("%.3f\n", (now() - t0) / n * 1e6);
    return 0;
}
EOF
cc -O2 -o "$TMP/loop" "$TMP/loop.c" || exit 1

# 10,000 small modules in 100 packages.
python3 - "$TMP/src" <<'EOF'
import os, sys
root = sys.argv[1]
for p in range(100):
    d = os.path.join(root, "pkg%03d" % p)
    os.makedirs(d)
    open(os.path.join(d, "__init__.py"), "w").write("")
    for m in range(99):
        with open(os.path.join(d, "mod%02d.py" % m), "w") as f:
            f.write("".join("def f%d(x):\n    return [x * %d for _ in range(%d)]\n\n" % (i, i, i)
                            for i in range(20)))
EOF
tar -C "$TMP/src" -cf "$TMP/files.tar" . || exit 1
FILES=$(tar -tf "$TMP/files.tar" | grep -c '\.py$')

run_side() { # side row -> number
    local side=$1 row=$2 work
    work=$(mktemp -d "$TMP/work.XXXXXX")
    local cmd
    case "$row" in
        open|rename) cmd=("$TMP/loop" "$row" "$N" "$work") ;;
        build) cmd=(sh -c "cd '$work' && s=\$(date +%s.%N) && tar xf '$TMP/files.tar' && python3 -m compileall -q . >/dev/null && e=\$(date +%s.%N) && echo \"\$e - \$s\" | bc") ;;
    esac
    case "$side" in
        native) "${cmd[@]}" ;;
        gofer) "$SV" do --network none -- "${cmd[@]}" ;;
        no-gofer) "$SV" do --network none --no-gofer -- "${cmd[@]}" ;;
    esac
    rm -rf "$work"
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

{
    echo "| row | native | sandbox (Gofer) | sandbox/native | sandbox (no Gofer) |"
    echo "|---|---|---|---|---|"
    for row in ${ROWS//,/ }; do
        declare -A vals=()
        for side in native gofer no-gofer; do
            vals[$side]=$(for _ in $(seq "$REPS"); do run_side "$side" "$row"; done | median)
        done
        unit="us/call"
        [ "$row" = build ] && unit="s ($FILES files)"
        # For times, sandbox/native speed is native time / sandbox time.
        ratio=$(echo "scale=2; ${vals[native]} / ${vals[gofer]}" | bc)
        echo "| $row ($unit) | ${vals[native]} | ${vals[gofer]} | ${ratio}x | ${vals[no-gofer]} |"
    done
} | tee "$OUT_MD"
