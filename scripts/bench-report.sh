#!/usr/bin/env bash
# Every benchmark in one run, one report: scripts/bench-sandbox.sh, then
# scripts/bench-nics.sh once per TCP loss level (0, 0.1%, 1%), then
# scripts/bench-docker.sh, each writing its table into the output directory;
# scripts/bench-report.py then reads those tables and writes report.md
# (machine facts, every table, the ratios) and the SVG plots it links to.
#
# The lossless NIC run has every row (native, nat, pasta, slirp, pcap,
# sandbox, relay, tap); the lossy ones have native, nat, sandbox, relay and
# tap. The Docker part has a column per OCI network mode (relay, sandbox).
#
# Options:
#   --reps N           repetitions: bench-sandbox's and bench-nics' --reps,
#                      bench-docker's --rounds (defaults: theirs, 3)
#   --time S           seconds per iperf3 / wrk run in bench-nics and
#                      bench-docker (default: theirs, 5)
#   --quick            a smoke check: 1 repetition, 2 s runs, 3 start samples
#   --only LIST        parts to run: sandbox,nics,docker (default all)
#   --smolvisor PATH   binary (default target/release/smolvisor)
#   --no-build         skip `cargo build --release -p smolvisor`
#   --out DIR          output directory (default target/bench)
#
# Needs root. The parts install their Debian packages when missing. Exit
# status is non-zero when a part failed; the report is written anyway and
# says which.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
REPO=$(pwd)
PARTS=(sandbox nics docker)
REPS=""
SECS=""
QUICK=0
BUILD=1
SV="$REPO/target/release/smolvisor"
OUT="$REPO/target/bench"
LOSSES=(0 0.001 0.01)
LOSSY_ROWS=nat,sandbox,relay,tap
COMMAND="scripts/bench-report.sh${*:+ $*}"

usage() { sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) shift; REPS=${1:-} ;;
        --time) shift; SECS=${1:-} ;;
        --quick) QUICK=1 ;;
        --only) shift; IFS=, read -r -a PARTS <<<"${1:-}" ;;
        --smolvisor) shift; SV=${1:-} ;;
        --no-build) BUILD=0 ;;
        --out) shift; OUT=${1:-} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-report: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for p in "${PARTS[@]}"; do
    case "$p" in
        sandbox|nics|docker) ;;
        *) echo "bench-report: unknown part '$p' (parts: sandbox, nics, docker)" >&2; exit 2 ;;
    esac
done
for n in "$REPS" "$SECS"; do
    [ -z "$n" ] || [[ $n =~ ^[1-9][0-9]*$ ]] ||
        { echo "bench-report: --reps and --time need positive integers" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "bench-report: needs root" >&2; exit 2; }
case "$SV" in /*) ;; *) SV="$REPO/$SV" ;; esac
case "$OUT" in /*) ;; *) OUT="$REPO/$OUT" ;; esac
want() { [[ " ${PARTS[*]} " == *" $1 "* ]]; }
log() { echo "bench-report: $*" >&2; }

if [ "$QUICK" = 1 ]; then
    : "${REPS:=1}" "${SECS:=2}"
fi
# Options passed on, each only when set here (else the part's default).
SANDBOX_OPTS=(--no-build --smolvisor "$SV")
NICS_OPTS=(--no-build --smolvisor "$SV")
DOCKER_OPTS=(--no-build --smolvisor "$SV" --modes relay,sandbox)
[ "$QUICK" = 1 ] && SANDBOX_OPTS+=(--quick) && DOCKER_OPTS+=(--reps 3)
[ -n "$REPS" ] && SANDBOX_OPTS+=(--reps "$REPS") && NICS_OPTS+=(--reps "$REPS") \
    && DOCKER_OPTS+=(--rounds "$REPS")
[ -n "$SECS" ] && NICS_OPTS+=(--time "$SECS") && DOCKER_OPTS+=(--time "$SECS")

if [ "$BUILD" = 1 ]; then
    log "cargo build --release -p smolvisor"
    cargo build --release -q -p smolvisor || exit 1
fi
[ -x "$SV" ] || { log "$SV not found (build it, or pass --smolvisor)"; exit 2; }

# Only this run's tables, so the report shows no stale ones.
mkdir -p "$OUT" || exit 1
rm -f "$OUT"/{sandbox,nics-loss*,docker}.{md,log} "$OUT"/{report.md,runs.tsv} \
    "$OUT"/{nics-loss,{sandbox,nics,docker}-ratio}.svg
RC=0
# PART FILE COMMAND...: runs one part, its table to FILE, its output (the
# progress lines) to the terminal and to a log beside the table.
part() {
    local name=$1 file=$2 t0 rc
    shift 2
    log "$name: $*"
    t0=$(date +%s)
    "$@" --out "$OUT/$file" 2>&1 | tee "$OUT/${file%.md}.log" >&2
    rc=${PIPESTATUS[0]}
    printf '%s\t%s\t%s\t%s\n' "$name" "$file" "$(($(date +%s) - t0))" "$rc" >>"$OUT/runs.tsv"
    if [ "$rc" != 0 ]; then
        RC=1
        log "$name: exit status $rc (log: ${OUT#"$REPO"/}/${file%.md}.log)"
    fi
}

want sandbox && part sandbox sandbox.md scripts/bench-sandbox.sh "${SANDBOX_OPTS[@]}"
if want nics; then
    for loss in "${LOSSES[@]}"; do
        opts=("${NICS_OPTS[@]}" --loss "$loss")
        [ "$loss" != 0 ] && opts+=(--only "$LOSSY_ROWS")
        part "nics, loss $loss" "nics-loss$loss.md" scripts/bench-nics.sh "${opts[@]}"
    done
fi
want docker && part docker docker.md scripts/bench-docker.sh "${DOCKER_OPTS[@]}"

python3 scripts/bench-report.py "$OUT" --command "$COMMAND" --smolvisor "$SV" || RC=1
log "report: ${OUT#"$REPO"/}/report.md"
exit "$RC"
