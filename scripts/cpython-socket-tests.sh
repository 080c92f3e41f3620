#!/usr/bin/env bash
# CPython's own socket tests (test.test_socket), class by class, natively and
# under `smolvisor do --network none`, with a side-by-side table of
# run/failures/errors/skipped per class.
#
# Natively the tests run in a fresh network namespace with only lo up
# (`unshare --net`), like the sandbox, and because the host's namespace has
# few ephemeral ports. Needs root, python3 with its test package, and a
# release build of smolvisor (built here unless SMOLVISOR is set).
#
# Usage: scripts/cpython-socket-tests.sh [-t SECONDS] [-o LOGDIR] [CLASS...]
#   -t  per-class time limit (default 120); a class over it counts as TIMEOUT
#   -o  where the per-class logs go (default: a new directory under /tmp)
# The exit status is 0 when every class passes in the sandbox exactly as
# natively (same run/failure/error/skip counts), 1 otherwise.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEFAULT_CLASSES=(
    GeneralModuleTests
    BasicTCPTest
    BasicTCPTest2
    TCPCloserTest
    BasicUDPTest
    BasicSocketPairTest
    NonBlockingTCPTests
    NonblockConstantTest
    FileObjectClassTestCase
    UnbufferedFileObjectClassTestCase
    LineBufferedFileObjectClassTestCase
    SmallBufferedFileObjectClassTestCase
    UnicodeReadWriteFileObjectClassTestCase
    SendfileUsingSendTest
    SendfileUsingSendfileTest
    NetworkConnectionNoServer
    NetworkConnectionAttributesTest
    NetworkConnectionBehaviourTest
    TestExceptions
    InheritanceTest
    ContextManagersTest
    CreateServerTest
    CreateServerFunctionalTest
    TCPTimeoutTest
    UDPTimeoutTest
    InterruptedRecvTimeoutTest
    InterruptedSendTimeoutTest
    SendmsgTCPTest
    RecvmsgTCPTest
    RecvmsgIntoTCPTest
    SendmsgUDPTest
    RecvmsgUDPTest
    RecvmsgIntoUDPTest
    SendmsgUDP6Test
    RecvmsgUDP6Test
    RecvmsgIntoUDP6Test
    RecvmsgRFC3542AncillaryUDP6Test
    RecvmsgIntoRFC3542AncillaryUDP6Test
    BufferIOTest
)

limit=120
logdir=""
while getopts "t:o:" opt; do
    case "$opt" in
        t) limit=$OPTARG ;;
        o) logdir=$OPTARG ;;
        *) sed -n '2,16p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
classes=("$@")
if [ "${#classes[@]}" -eq 0 ]; then
    classes=("${DEFAULT_CLASSES[@]}")
fi
if [ -z "$logdir" ]; then
    logdir=$(mktemp -d /tmp/cpython-socket-tests.XXXXXX)
fi
mkdir -p "$logdir/native" "$logdir/sandbox"

if [ -z "${SMOLVISOR:-}" ]; then
    cargo build --release -p smolvisor --quiet
    SMOLVISOR=$PWD/target/release/smolvisor
fi
python=$(command -v python3)
python -c 'import test.test_socket' 2>/dev/null || {
    echo "python3 has no test.test_socket (install its test package)" >&2
    exit 2
}

# Runs one class; its log goes to $3. Prints "run failures errors skipped",
# or "TIMEOUT"/"CRASH" when the summary line is missing.
run_class() {
    local where=$1 class=$2 log=$3 status=0
    local cmd=("$python" -m unittest -v "test.test_socket.$class")
    case "$where" in
        native)
            timeout -k 5 "$limit" unshare --net -- \
                sh -c 'ip link set lo up && exec "$@"' sh "${cmd[@]}" >"$log" 2>&1 || status=$?
            ;;
        sandbox)
            timeout -k 5 "$limit" "$SMOLVISOR" do --network none -- "${cmd[@]}" >"$log" 2>&1 || status=$?
            ;;
    esac
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        # How far it got, and the test it hung in (the last one without a result).
        local done hung
        done=$(grep -cE ' \.\.\. (ok|FAIL|ERROR|skipped|expected failure)' "$log" || true)
        hung=$(grep -oE '^[A-Za-z_0-9]+ \(test\.test_socket\.[A-Za-z0-9_.]+\) \.\.\. $' "$log" | tail -n 1 | cut -d' ' -f1 || true)
        if [ -z "$hung" ]; then
            hung="after $(grep -oE '^[A-Za-z_0-9]+ \(test\.test_socket\.' "$log" | tail -n 1 | cut -d' ' -f1)"
        fi
        echo "TIMEOUT after $done tests, in ${hung:-?}" >>"$logdir/notes.txt"
        echo "TIMEOUT($done)"
        return
    fi
    local ran summary
    ran=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\} in .*/\1/p' "$log" | tail -n 1)
    summary=$(grep -E '^(OK|FAILED)( \(.*\))?$' "$log" | tail -n 1 || true)
    if [ -z "$ran" ] || [ -z "$summary" ]; then
        echo "CRASH($status)"
        return
    fi
    local f e s
    f=$(sed -n 's/.*failures=\([0-9]*\).*/\1/p' <<<"$summary")
    e=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$summary")
    s=$(sed -n 's/.*skipped=\([0-9]*\).*/\1/p' <<<"$summary")
    echo "$ran ${f:-0} ${e:-0} ${s:-0}"
}

fmt_counts() {
    case "$1" in
        TIMEOUT* | CRASH*) printf '%-20s' "$1" ;;
        *) read -r r f e s <<<"$1"; printf '%4s %4s %4s %4s     ' "$r" "$f" "$e" "$s" ;;
    esac
}

printf '%-40s %-20s %-20s\n' "class" "native run/F/E/skip" "sandbox run/F/E/skip"
printf '%-40s %-20s %-20s\n' "-----" "-------------------" "--------------------"
same=0
differ=0
declare -A tot_n=([r]=0 [f]=0 [e]=0 [s]=0) tot_s=([r]=0 [f]=0 [e]=0 [s]=0)
for class in "${classes[@]}"; do
    n=$(run_class native "$class" "$logdir/native/$class.log")
    s=$(run_class sandbox "$class" "$logdir/sandbox/$class.log")
    if [ -f "$logdir/notes.txt" ]; then
        sed "s/^/    $class: /" "$logdir/notes.txt" >>"$logdir/timeouts.txt"
        rm -f "$logdir/notes.txt"
    fi
    mark=""
    if [ "$n" = "$s" ]; then
        same=$((same + 1))
    else
        differ=$((differ + 1))
        mark="  <-- differs"
    fi
    for side in n s; do
        counts=${!side}
        case "$counts" in TIMEOUT* | CRASH*) continue ;; esac
        read -r r f e k <<<"$counts"
        if [ "$side" = n ]; then
            tot_n[r]=$((tot_n[r] + r)); tot_n[f]=$((tot_n[f] + f))
            tot_n[e]=$((tot_n[e] + e)); tot_n[s]=$((tot_n[s] + k))
        else
            tot_s[r]=$((tot_s[r] + r)); tot_s[f]=$((tot_s[f] + f))
            tot_s[e]=$((tot_s[e] + e)); tot_s[s]=$((tot_s[s] + k))
        fi
    done
    printf '%-40s %s %s%s\n' "$class" "$(fmt_counts "$n")" "$(fmt_counts "$s")" "$mark"
done
printf '%-40s %s %s\n' "TOTAL" \
    "$(fmt_counts "${tot_n[r]} ${tot_n[f]} ${tot_n[e]} ${tot_n[s]}")" \
    "$(fmt_counts "${tot_s[r]} ${tot_s[f]} ${tot_s[e]} ${tot_s[s]}")"
echo
echo "$same classes identical, $differ differ; logs in $logdir"
if [ -f "$logdir/timeouts.txt" ]; then
    echo "timeouts (limit ${limit}s):"
    cat "$logdir/timeouts.txt"
fi
# Tests that fail or err in the sandbox but not natively.
# (From the verbose lines, which a class killed at its time limit has too.)
failing() {
    grep -hoE '^[A-Za-z_0-9]+ \(test\.test_socket\.[A-Za-z0-9_.]+\) \.\.\. (FAIL|ERROR)' "$@" 2>/dev/null |
        sed -E 's/^[^ ]+ \(test\.test_socket\.([^)]*)\) \.\.\. (.*)/\2 \1/' | sort -u || true
}
failing "$logdir"/native/*.log >"$logdir/native-failing.txt"
failing "$logdir"/sandbox/*.log >"$logdir/sandbox-failing.txt"
echo "failing only in the sandbox:"
comm -13 "$logdir/native-failing.txt" "$logdir/sandbox-failing.txt" | sed 's/^/  /' | head -n 60
[ "$differ" -eq 0 ]
