#!/usr/bin/env python3
"""Reads what `conntest plot` wrote, strictly, and prints what it holds.

Usage: plot_parse.py FILE.svg|FILE.html

The file must be well-formed XML (xml.etree, the strict parser: an
unclosed tag or a bad escape fails). A page is also read with html.parser
for what a browser would fetch or run. Prints one JSON object:

  charts: per chart (each nested <svg> of an SVG document, each inline <svg>
          of a page): its texts, the point count of each polyline, its
          circles, and its bars (rects filled with the series colour);
  page:   for a page only: <script> tags, attribute values naming another
          place (`://`, xmlns aside), <link> tags, CSS url()/@import, tables.

Exits 0 after printing, 1 with the parser's message when the file is not
well-formed.
"""

import json
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

SVG = "{http://www.w3.org/2000/svg}"
BAR_FILL = "#1F77B4"


def chart_facts(svg):
    return {
        "texts": [(t.text or "").strip() for t in svg.iter(SVG + "text")],
        "polylines": [len(p.get("points", "").split()) for p in svg.iter(SVG + "polyline")],
        "circles": sum(1 for _ in svg.iter(SVG + "circle")),
        "bars": sum(
            1
            for r in svg.iter(SVG + "rect")
            if r.get("fill") == BAR_FILL and r.get("opacity") == "0.75"
        ),
    }


class PageScan(HTMLParser):
    def __init__(self):
        super().__init__()
        self.facts = {"scripts": 0, "external": [], "links": 0, "css_fetches": 0, "tables": 0}
        self.in_style = False

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.facts["scripts"] += 1
        if tag == "link":
            self.facts["links"] += 1
        if tag == "table":
            self.facts["tables"] += 1
        self.in_style = tag == "style"
        for name, value in attrs:
            if name != "xmlns" and value and "://" in value:
                self.facts["external"].append(f"{tag} {name}={value}")

    def handle_data(self, data):
        if self.in_style and ("url(" in data or "@import" in data):
            self.facts["css_fetches"] += 1

    def handle_endtag(self, tag):
        self.in_style = False


def main():
    path = sys.argv[1]
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        print(f"{path}: not well-formed: {e}")
        return 1
    out = {}
    if root.tag == SVG + "svg":
        out["charts"] = [chart_facts(s) for s in root.findall(SVG + "svg")]
    else:
        out["charts"] = [chart_facts(s) for s in root.iter(SVG + "svg")]
        scan = PageScan()
        with open(path, encoding="utf-8") as f:
            scan.feed(f.read())
        out["page"] = scan.facts
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
