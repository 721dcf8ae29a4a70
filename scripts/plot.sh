#!/usr/bin/env bash
# Plots the round-trip durations of a conntest report as roundtrip-plot.png
# in the current directory:
#
#   export SCRIPTS_DIR=scripts       # where this script lives (optional)
#   export REPORT_FILE=report.json   # a report written by `conntest client -f`
#   bash scripts/plot.sh
#
# The client's duration of every answered run (microseconds) is plotted
# against its run_count, with the server's duration when the server recorded
# it. Needs jq and gnuplot. Works from any directory and removes only its own
# temporary files. PLOT_FILE overrides the output name.
#
# Exit status: 0 the plot was written; 1 nothing to plot or gnuplot failed;
# 2 usage error (no report, jq or gnuplot missing).
set -euo pipefail

die() {
  echo "plot.sh: $2" >&2
  exit "$1"
}

# This script's directory: SCRIPTS_DIR when it holds this script, else where
# bash found it. Nothing else is read from it today; kept for the seed's usage.
SCRIPTS_DIR=${SCRIPTS_DIR:-}
if [ -z "$SCRIPTS_DIR" ] || [ ! -f "$SCRIPTS_DIR/plot.sh" ]; then
  SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fi

REPORT_FILE=${REPORT_FILE:-${1:-}}
OUTPUT=${PLOT_FILE:-roundtrip-plot.png}

[ -n "$REPORT_FILE" ] || die 2 "set REPORT_FILE to a report written by 'conntest client -f FILE'"
[ -f "$REPORT_FILE" ] || die 2 "REPORT_FILE '$REPORT_FILE' does not exist (run 'conntest client ... -f $REPORT_FILE' first)"
[ -r "$REPORT_FILE" ] || die 2 "REPORT_FILE '$REPORT_FILE' is not readable"
missing=()
for tool in jq gnuplot; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  die 2 "missing ${missing[*]}; install with: apt-get install -y jq gnuplot-nox (or brew install jq gnuplot)"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/conntest-plot.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# run_count, client duration (us), server duration (us); "-" when unknown.
if ! jq -r '
    .results // error("no .results: not a conntest report")
    | map(select(.run_count != null))
    | sort_by(.run_count)
    | .[]
    | [ .run_count,
        (if .client_duration_ns == null then "-" else .client_duration_ns / 1000 end),
        (if .server_duration_ns == null then "-" else .server_duration_ns / 1000 end) ]
    | @tsv' "$REPORT_FILE" >"$tmp/durations.tsv" 2>"$tmp/jq.err"; then
  die 2 "cannot read '$REPORT_FILE' as a conntest report: $(head -n 1 "$tmp/jq.err")"
fi
answered=$(awk -F '\t' '$2 != "-"' "$tmp/durations.tsv" | wc -l | tr -d ' ')
[ "$answered" -gt 0 ] || die 1 "'$REPORT_FILE' has no answered runs to plot"
has_server=$(awk -F '\t' '$3 != "-"' "$tmp/durations.tsv" | wc -l | tr -d ' ')

# gnuplot single-quoted strings: a quote is written twice.
gp_quote() { printf "'%s'" "${1//\'/\'\'}"; }
# The title is one line: newlines, tabs and other control characters in the
# description become single spaces (gnuplot refuses a newline in a string).
description=$(jq -r '.client_run_group.description // "" | gsub("[[:cntrl:]]+"; " ")' "$REPORT_FILE" 2>/dev/null || true)
average=$(jq -r '(.average_response_time_ns // 0) / 1000 | . * 10 | round / 10' "$REPORT_FILE" 2>/dev/null || echo "?")
title="conntest round trips"
[ -n "$description" ] && title="$title: $description"
title="$title ($answered runs, mean client ${average} us)"

if gnuplot -e 'set terminal pngcairo' >/dev/null 2>&1; then
  terminal="pngcairo size 1200,700 noenhanced"
else
  terminal="png size 1200,700 noenhanced"
fi

{
  echo "set terminal $terminal"
  echo "set output $(gp_quote "$tmp/plot.png")"
  echo "set title $(gp_quote "$title") noenhanced"
  echo "set xlabel 'run count'"
  echo "set ylabel 'duration (microseconds)'"
  echo "set datafile separator tab"
  echo "set datafile missing '-'"
  echo "set grid"
  echo "set key top right box opaque noenhanced"
  echo "set yrange [0:*]"
  plot="plot $(gp_quote "$tmp/durations.tsv") using 1:2 with linespoints pt 7 ps 0.4 lw 1 title 'client round trip'"
  if [ "$has_server" -gt 0 ]; then
    plot="$plot, '' using 1:3 with linespoints pt 7 ps 0.3 lw 1 title 'server duration'"
  fi
  echo "$plot"
} >"$tmp/plot.gp"

if ! gnuplot "$tmp/plot.gp" 2>"$tmp/gnuplot.err"; then
  cat "$tmp/gnuplot.err" >&2
  die 1 "gnuplot failed"
fi
# Replace the output whole: a reader never sees half a PNG.
mv -f "$tmp/plot.png" "$OUTPUT"
echo "plot.sh: wrote $OUTPUT ($answered runs from $REPORT_FILE)" >&2
