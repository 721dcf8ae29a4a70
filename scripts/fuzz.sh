#!/usr/bin/env bash
# Fuzzes the HTTP parsers with cargo-fuzz, each target for a while.
#
# Usage:
#   scripts/fuzz.sh                          # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh         # every target, 10 min each
#   scripts/fuzz.sh response_parser          # one target
#
# Targets (fuzz/fuzz_targets/): request_parser (ServerConn), response_parser
# (ClientConn), chunked_decoder (ChunkedDecoder), l4_header (the raw TCP/UDP
# message header and Framer). Each feeds arbitrary bytes
# split at points taken from the input and checks that nothing panics and
# that the result is the same as feeding everything at once.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). It runs on a stable
# toolchain: RUSTC_BOOTSTRAP=1 (set here) lets it pass the nightly-only
# flags it needs. FUZZ_SANITIZER=none builds without AddressSanitizer
# (faster; the code under test has no unsafe). Extra arguments for
# libFuzzer go in FUZZ_ARGS, e.g. FUZZ_ARGS="-jobs=2 -workers=2".
#
# Seeds come from the checked-in fuzz/corpus/<target>; what the fuzzer finds
# goes to fuzz/target/corpus/<target> (ignored by git); crashes to
# fuzz/artifacts/<target>/, replayed with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/crash-...
# To fold new coverage into the checked-in corpus (keep it small):
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/corpus/<target> \
#       fuzz/target/corpus/<target> -- -merge=1
# Exits 1 if any target failed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "scripts/fuzz.sh: cargo-fuzz missing; install it with: cargo install cargo-fuzz" >&2
  exit 2
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

failed=()
for target in "${targets[@]}"; do
  echo "== $target: ${seconds}s"
  work="fuzz/target/corpus/$target"
  mkdir -p "$work" "fuzz/corpus/$target"
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags.
  if ! cargo fuzz run --sanitizer "$sanitizer" "$target" \
    "$work" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 ${FUZZ_ARGS:-}; then
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "scripts/fuzz.sh: failed: ${failed[*]} (see fuzz/artifacts/)" >&2
  exit 1
fi
echo "scripts/fuzz.sh: ${#targets[@]} target(s), no failures"
