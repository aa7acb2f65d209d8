"""Reports from saved run files: `mft report` (one run or reproduce directory) and `mft compare`.

A pure function of the JSON files a run leaves behind (manifest, timings, eval/results.json, data/sizes.json,
diversity.json): nothing here loads or runs a model, and torch is never imported. See docs/report.md.
"""

from __future__ import annotations

from mft.report.build import build_compare, build_report, methods_table, write_compare, write_report
from mft.report.load import LABELS, METHOD_ORDER, Study, load

__all__ = [
    "LABELS",
    "METHOD_ORDER",
    "Study",
    "build_compare",
    "build_report",
    "load",
    "methods_table",
    "write_compare",
    "write_report",
]
