#!/usr/bin/env bash
# Builds nine of gVisor's socket test binaries from a gVisor checkout that
# lives OUTSIDE this repository, runs each natively (in a fresh network
# namespace) and inside `smolvisor do --network none`, and prints a
# pass/fail/skip/hang table.
#
#   scripts/gvisor-socket-tests.sh --gvisor-src DIR [--only BIN,...]
#                                  [--build-dir DIR] [--no-native] [--no-inside]
#                                  [--hang-secs N] [--keep-logs DIR] [--smolvisor BIN]
#
# Nothing of gVisor's is copied into this repository: the script compiles
# DIR/test/... in place. The two files it writes itself (a stand-in for the
# test initialisation that would need google-benchmark, and a main) are ours.
#
# Needs g++ and Debian's libgtest-dev, libgmock-dev and libabsl-dev (installed
# with apt-get when missing), unshare(1) and a built target/release/smolvisor.
# The native runs and the inside runs both need root (network namespaces).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
src=""
only=""
build=/tmp/smolvisor-gvisor-socket-tests
hang_secs=20
run_native=1
run_inside=1
logs=""
smolvisor="$repo/target/release/smolvisor"
while [ $# -gt 0 ]; do
  case "$1" in
    --gvisor-src) src=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --build-dir) build=$2; shift 2 ;;
    --hang-secs) hang_secs=$2; shift 2 ;;
    --no-native) run_native=0; shift ;;
    --no-inside) run_inside=0; shift ;;
    --keep-logs) logs=$2; shift 2 ;;
    --smolvisor) smolvisor=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ -n "$src" ] || { echo "--gvisor-src DIR is required" >&2; exit 2; }
src=$(cd "$src" && pwd)
[ -f "$src/test/syscalls/linux/tcp_socket.cc" ] || { echo "$src does not look like a gVisor checkout" >&2; exit 2; }
case "$src/" in "$repo"/*) echo "keep the gVisor source outside the repository" >&2; exit 2 ;; esac
mkdir -p "$build"
[ -n "$logs" ] || logs="$build/logs"
mkdir -p "$logs"

# binary -> its own sources (under test/syscalls/linux)
declare -A sources=(
  [tcp_socket]="tcp_socket.cc"
  [udp_socket]="udp_socket.cc"
  [socket_ip_tcp_generic_loopback]="socket_ip_tcp_generic_loopback.cc socket_ip_tcp_generic.cc"
  [socket_ip_tcp_loopback]="socket_ip_tcp_loopback.cc socket_generic_test_cases.cc"
  [socket_ip_tcp_loopback_blocking]="socket_ip_tcp_loopback_blocking.cc socket_stream_blocking.cc"
  [socket_ip_tcp_loopback_nonblock]="socket_ip_tcp_loopback_nonblock.cc socket_non_blocking.cc"
  [socket_inet_loopback]="socket_inet_loopback.cc"
  [socket_ip_udp_loopback]="socket_ip_udp_loopback.cc socket_generic_test_cases.cc socket_ip_udp_generic.cc socket_non_stream.cc"
  [socket_ipv4_udp_unbound_loopback]="socket_ipv4_udp_unbound_loopback.cc socket_ipv4_udp_unbound.cc"
)
order="tcp_socket udp_socket socket_ip_tcp_generic_loopback socket_ip_tcp_loopback socket_ip_tcp_loopback_blocking socket_ip_tcp_loopback_nonblock socket_inet_loopback socket_ip_udp_loopback socket_ipv4_udp_unbound_loopback"
if [ -n "$only" ]; then order=${only//,/ }; fi
for b in $order; do [ -n "${sources[$b]:-}" ] || { echo "unknown binary $b" >&2; exit 2; }; done

# ---- toolchain ------------------------------------------------------------
if ! [ -f /usr/include/gtest/gtest.h ] || ! [ -f /usr/include/gmock/gmock.h ] || ! [ -d /usr/include/absl ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ libgtest-dev libgmock-dev libabsl-dev >/dev/null
fi
CXX=${CXX:-g++}
CXXFLAGS=(-O1 -std=c++17 -w -I"$src" -DGTEST_HAS_ABSL=0)
absl_libs=$(ls /usr/lib/*/libabsl_*.so 2>/dev/null | sed -E 's#.*/lib(absl_[^.]*)\.so#-l\1#' | sort -u | tr '\n' ' ')

# ---- our own stand-ins ----------------------------------------------------
# test_util_impl.cc pulls in google-benchmark; the runfiles helper pulls in
# bazel's runfiles library. These tests need neither, so we provide the few
# functions they declare, written here.
cat >"$build/stand_in.cc" <<'EOF'
// Written for smolvisor's conformance script: the initialisation hooks that
// gVisor's test headers declare, without google-benchmark or bazel runfiles.
#include <signal.h>
#include <string>
#include "gtest/gtest.h"

namespace gvisor {
namespace testing {
void SetupGvisorDeathTest() {}
void TestInit(int* argc, char*** argv) {
  ::testing::InitGoogleTest(argc, *argv);
  signal(SIGPIPE, SIG_IGN);  // a write to a closed peer must give EPIPE, not kill
}
int RunAllTests() { return RUN_ALL_TESTS(); }
std::string RunfilePath(std::string path) { return path; }
}  // namespace testing
}  // namespace gvisor
EOF
cat >"$build/plain_main.cc" <<'EOF'
// Written for smolvisor's conformance script: run every registered test.
#include <signal.h>
#include "gtest/gtest.h"
int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  signal(SIGPIPE, SIG_IGN);
  return RUN_ALL_TESTS();
}
EOF

# ---- build ----------------------------------------------------------------
util_srcs="test/util/socket_util.cc test/util/socket_util_impl.cc test/util/posix_error.cc
  test/util/test_util.cc test/util/temp_path.cc test/util/logging.cc test/util/fs_util.cc
  test/util/save_util.cc test/util/save_util_linux.cc test/util/cleanup.h
  test/util/linux_capability_util.cc test/util/platform_util.cc test/util/thread_util.h
  test/util/time_util.cc test/util/timer_util.cc test/util/multiprocess_util.cc
  test/util/file_descriptor.h test/util/proc_util.cc test/util/memory_util.h
  test/syscalls/linux/ip_socket_test_util.cc test/syscalls/linux/unix_domain_socket_test_util.cc"
compile() { # src obj
  local in=$1 out=$2
  if [ ! -f "$out" ] || [ "$in" -nt "$out" ]; then
    "$CXX" "${CXXFLAGS[@]}" -c "$in" -o "$out"
  fi
}
objs=()
for f in $util_srcs; do
  case "$f" in *.h) continue ;; esac
  [ -f "$src/$f" ] || continue
  o="$build/$(echo "$f" | tr / _).o"
  compile "$src/$f" "$o" &
  objs+=("$o")
done
compile "$build/stand_in.cc" "$build/stand_in.o" &
compile "$build/plain_main.cc" "$build/plain_main.o" &
wait
objs+=("$build/stand_in.o" "$build/plain_main.o")
for b in $order; do
  bobjs=()
  for f in ${sources[$b]}; do
    o="$build/$(basename "$f" .cc).o"
    compile "$src/test/syscalls/linux/$f" "$o" &
    bobjs+=("$o")
  done
  wait
  if [ ! -x "$build/$b" ] || [ -n "$(find "${bobjs[@]}" -newer "$build/$b")" ]; then
    "$CXX" -o "$build/$b" "${bobjs[@]}" "${objs[@]}" -lgmock -lgtest $absl_libs -lpthread
  fi
done
echo "built: $order" >&2

# ---- run ------------------------------------------------------------------
[ "$run_inside" = 0 ] || [ -x "$smolvisor" ] || { echo "build smolvisor first: cargo build --release -p smolvisor" >&2; exit 2; }

# Runs one binary with a filter, in the mode given, to a log; returns 124 if
# the binary printed nothing for $hang_secs seconds (it is then killed).
run_once() { # mode bin filter log
  local mode=$1 bin=$2 filter=$3 log=$4
  local pid last now size lastsize=-1
  local cmd
  case "$mode" in
    native) cmd=(unshare -n sh -c 'ip link set lo up; exec "$0" "$@"' "$build/$bin" --gtest_filter="$filter") ;;
    inside) cmd=("$smolvisor" do --network none -- "$build/$bin" --gtest_filter="$filter") ;;
  esac
  setsid "${cmd[@]}" >"$log" 2>&1 </dev/null &
  pid=$!
  last=$(date +%s)
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    size=$(stat -c %s "$log")
    now=$(date +%s)
    if [ "$size" != "$lastsize" ]; then lastsize=$size; last=$now; fi
    if [ $((now - last)) -ge "$hang_secs" ]; then
      kill -KILL -- "-$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      return 124
    fi
  done
  wait "$pid" 2>/dev/null || true
  return 0
}

# Runs every test of a binary, resuming after a hang; writes
# "<pass> <fail> <skip> <hang>" and the failing/hanging names to files.
run_all() { # mode bin
  local mode=$1 bin=$2
  local tag="$logs/$bin.$mode"
  local all="$tag.all" done_list="$tag.done" exclude filter rc part=0
  "$build/$bin" --gtest_list_tests 2>/dev/null | awk '
    /^[^ ]/ { suite=$1; next }
    /^  / { name=$1; if (name !~ /^DISABLED_/ && suite !~ /DISABLED_/) print suite name }' >"$all"
  : >"$done_list"; : >"$tag.hangs"; : >"$tag.log"
  while :; do
    exclude=$(sort -u "$done_list" | paste -sd: -)
    filter="*"
    [ -z "$exclude" ] || filter="*-$exclude"
    part=$((part + 1))
    rc=0
    run_once "$mode" "$bin" "$filter" "$tag.part$part" || rc=$?
    cat "$tag.part$part" >>"$tag.log"
    # finished tests of this part
    grep -aE '^\[ +(OK|FAILED|SKIPPED) +\] [^ ,]+.* \([0-9]+ ms\)$' "$tag.part$part" | sed -E 's/^\[[^]]*\] ([^ ,]+).*/\1/' >>"$done_list" || true
    rm -f "$tag.part$part"
    if [ "$rc" = 124 ]; then
      # the test that started last without finishing is the one that hung
      local hung
      hung=$(grep -aE '^\[ RUN +\] ' "$tag.log" | sed -E 's/^\[ RUN +\] //' | grep -vxF -f "$done_list" | tail -1 || true)
      if [ -z "$hung" ]; then break; fi
      echo "$hung" >>"$tag.hangs"
      echo "$hung" >>"$done_list"
      continue
    fi
    break
  done
  local pass fail skip hang
  pass=$(grep -acE '^\[ +OK +\] [^ ,]+.* \([0-9]+ ms\)$' "$tag.log" || true)
  fail=$(grep -aE '^\[ +FAILED +\] [^ ,]+.* \([0-9]+ ms\)$' "$tag.log" | sed -E 's/^\[[^]]*\] ([^ ,]+).*/\1/' | tee "$tag.fails" | wc -l || true)
  skip=$(grep -acE '^\[ +SKIPPED +\] [^ ,]+.* \([0-9]+ ms\)$' "$tag.log" || true)
  hang=$(wc -l <"$tag.hangs")
  local total ran
  total=$(wc -l <"$all")
  ran=$((pass + fail + skip + hang))
  echo "$pass $fail $skip $hang $ran $total" >"$tag.counts"
}

printf '| %-34s | %-22s | %-26s |\n' binary "native pass/fail/skip" "inside pass/fail/skip/hang"
printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..36})" "$(printf -- '-%.0s' {1..24})" "$(printf -- '-%.0s' {1..28})"
for b in $order; do
  n="-" i="-"
  if [ "$run_native" = 1 ]; then
    run_all native "$b"
    read -r p f s h r t <"$logs/$b.native.counts"
    n="$p/$f/$s"; [ "$h" = 0 ] || n="$n hang $h"; [ "$r" = "$t" ] || n="$n ($r of $t)"
  fi
  if [ "$run_inside" = 1 ]; then
    run_all inside "$b"
    read -r p f s h r t <"$logs/$b.inside.counts"
    i="$p/$f/$s/$h"; [ "$r" = "$t" ] || i="$i ($r of $t)"
  fi
  printf '| %-34s | %-22s | %-26s |\n' "$b" "$n" "$i"
done
echo "logs, failing and hanging test names: $logs/<binary>.<native|inside>.{fails,hangs,log}" >&2
