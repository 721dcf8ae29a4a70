#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests, and a
# build of the benches so they do not rot. Needs curl, jq and gnuplot
# (`.ci/run` installs them on a fresh machine).
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

cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test
cargo bench --no-run --quiet
