#!/usr/bin/env bash
# The one demo command: a TCP bulk transfer between two netstacks, with its
# throughput. Arguments go to the demo: --mib N (default 1024), --mtu M.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo run --release -p netstack --example demo -- "$@"
