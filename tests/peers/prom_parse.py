#!/usr/bin/env python3
"""Parses a Prometheus text exposition (format 0.0.4) with the official
Python client's parser, written by others, and prints its samples as JSON.

Usage: prom_parse.py FILE

Exits 0 and prints one JSON array of {"family", "type", "name", "labels",
"value"} when the whole file parses; 1 with the parser's message when it
does not, when a sample has no `# TYPE`, or when a histogram's buckets are
not cumulative or do not end with `+Inf` equal to `_count`; 2 on a usage or
setup error (prometheus_client missing).
"""

import importlib.util
import json
import sys


def check_histogram(family):
    """Buckets cumulative, ending at +Inf, which equals _count."""
    buckets = [s for s in family.samples if s.name == family.name + "_bucket"]
    counts = [s for s in family.samples if s.name == family.name + "_count"]
    if not buckets or buckets[-1].labels.get("le") != "+Inf":
        raise ValueError(f"{family.name}: the last bucket is not le=\"+Inf\"")
    bounds = [float(s.labels["le"]) for s in buckets]
    if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
        raise ValueError(f"{family.name}: bucket bounds are not increasing")
    values = [s.value for s in buckets]
    if values != sorted(values):
        raise ValueError(f"{family.name}: buckets are not cumulative: {values}")
    if len(counts) != 1 or counts[0].value != values[-1]:
        raise ValueError(f"{family.name}: _count differs from the +Inf bucket")
    if not any(s.name == family.name + "_sum" for s in family.samples):
        raise ValueError(f"{family.name}: no _sum")


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: prom_parse.py FILE\n")
        return 2
    if importlib.util.find_spec("prometheus_client") is None:
        sys.stderr.write(
            "prom_parse.py: prometheus_client is missing; `pip install "
            "prometheus-client` (scripts/test.sh does)\n"
        )
        return 2
    from prometheus_client.parser import text_string_to_metric_families

    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read()
    out = []
    try:
        for family in text_string_to_metric_families(text):
            if family.type == "unknown":
                raise ValueError(f"{family.name}: no # TYPE line")
            if family.type == "histogram":
                check_histogram(family)
            for s in family.samples:
                out.append(
                    {
                        "family": family.name,
                        "type": family.type,
                        "name": s.name,
                        "labels": s.labels,
                        "value": s.value,
                    }
                )
    except ValueError as why:
        sys.stderr.write(f"prom_parse.py: not a valid exposition: {why}\n")
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
