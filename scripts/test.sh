#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests, and a
# build of the benches and the fuzz targets so they do not rot. Needs curl, jq and gnuplot
# (`.ci/run` installs them on a fresh machine). Ends with one line counting
# every test cargo ran: "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in curl jq gnuplot; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/test.sh: missing ${missing[*]}; install with: apt-get install -y curl jq gnuplot-nox" >&2
  exit 2
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT

cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test 2>&1 | tee "$log"
cargo bench --no-run --quiet
# The fuzz targets (their own workspace) must keep compiling against the API.
cargo check --manifest-path fuzz/Cargo.toml --quiet

awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
