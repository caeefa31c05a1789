#!/usr/bin/env bash
# Load-and-fault soak (see bench/soak.py for what runs and what is checked).
# Usage: bench/soak.sh [seconds]   (default 180)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin wif-proxy
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || true
python3 bench/soak.py "${1:-180}" "$PWD/target/release/wif-proxy" "$work"
