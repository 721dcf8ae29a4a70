#!/usr/bin/env bash
# The whole test suite, set-up included: installs what the tests use where
# it is missing (Debian packages, Python's h11 and REDbot, rustfmt and
# clippy, the Windows target), then formatting, lints, unit and integration
# tests, a build of the benches and the fuzz targets so they do not rot,
# and a Windows build. A second run installs nothing and says nothing about
# set-up. Ends with one line counting every test cargo ran:
# "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, as command:package. gnuplot for scripts/plot.sh; redis,
# nginx, tinyproxy, sockperf and iperf3 as peers and loads on loopback;
# mingw-w64 links the Windows build.
DEBIAN_TOOLS=(curl:curl jq:jq gnuplot:gnuplot-nox redis-server:redis-server nginx:nginx
  tinyproxy:tinyproxy sockperf:sockperf iperf3:iperf3
  x86_64-w64-mingw32-gcc:gcc-mingw-w64-x86-64)
# Python packages the independent peers use, pinned, as module:package==version.
PYTHON_PACKAGES=(h11:h11==0.16.0 redbot.cli:redbot==2.7.1 prometheus_client:prometheus-client==0.26.0)
WINDOWS_TARGET=x86_64-pc-windows-gnu

setup_debian() {
  local need=() pair
  for pair in "${DEBIAN_TOOLS[@]}"; do
    PATH="$PATH:/usr/sbin:/sbin" command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
  done
  # A module, not a command: Python's yaml parses deploy/'s manifests (tests/deploy.rs).
  python3 -c 'import yaml' >/dev/null 2>&1 || need+=(python3-yaml)
  [ ${#need[@]} -eq 0 ] && return
  echo "scripts/test.sh: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Installing starts no service (nginx, redis): the tests start their own.
  local policy=/usr/sbin/policy-rc.d added=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
  fi
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ -n "$added" ] && rm -f "$policy"
  return 0
}

setup_python() {
  local need=() pair module spec
  for pair in "${PYTHON_PACKAGES[@]}"; do
    module=${pair%%:*} spec=${pair#*:}
    python3 - "$module" "${spec%%==*}" "${spec#*==}" >/dev/null 2>&1 <<'EOF' || need+=("$spec")
import importlib, importlib.metadata, sys
importlib.import_module(sys.argv[1])
sys.exit(importlib.metadata.version(sys.argv[2]) != sys.argv[3])
EOF
  done
  [ ${#need[@]} -eq 0 ] && return
  echo "scripts/test.sh: installing ${need[*]} (pip)" >&2
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check \
    --root-user-action=ignore "${need[@]}"
}

setup_rust() {
  local installed
  installed=$(rustup component list --installed)
  for component in rustfmt clippy; do
    grep -q "^$component" <<<"$installed" || rustup component add "$component"
  done
  rustup target list --installed | grep -qx "$WINDOWS_TARGET" || rustup target add "$WINDOWS_TARGET"
}

setup_debian
setup_python
setup_rust

log=$(mktemp)
trap 'rm -f "$log"' EXIT

cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
# The tests' exit status is kept for after the Windows build and the count.
status=0
# Every test binary runs, so the count below is the whole suite's.
cargo test --no-fail-fast 2>&1 | tee "$log" || status=$?
cargo bench --no-run --quiet
# The fuzz targets (their own workspace) must keep compiling against the API.
cargo check --manifest-path fuzz/Cargo.toml --quiet
# The Windows build must keep compiling (Linux-only pieces stay behind cfg);
# rustc links it with Debian's x86_64-w64-mingw32-gcc by default.
cargo build --release --quiet --target "$WINDOWS_TARGET"

awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
