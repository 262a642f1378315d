#!/usr/bin/env bash
# Time-boxed fuzzing of what a request meets before the encoder: the sentence splitter, the
# matcher with request-defined actors, and validation plus preparation (tests/properties.rs).
# Each property runs with fresh seeds for SECONDS (default 300) and prints the cases it ran;
# a failure prints its seed and the shrunk input, and the script exits non-zero.
#
#   bash scripts/fuzz.sh [SECONDS]            # STANCE_FUZZ_SEED=N to choose the first seed
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-300}"
case "$seconds" in
  ''|*[!0-9.]*) echo "usage: bash scripts/fuzz.sh [SECONDS] (a number of seconds, got '$seconds')" >&2; exit 2 ;;
esac
cargo build --release --quiet --tests
# The two properties run one after the other (one test thread), SECONDS / 2 each.
half=$(python3 -c "print(float('$seconds') / 2)")
STANCE_FUZZ_SECONDS="$half" cargo test --release --quiet --test properties -- --test-threads 1 --nocapture 2>&1 \
  | grep -E 'fuzz [a-z]+: |panicked|FAILED|failed|test result'
