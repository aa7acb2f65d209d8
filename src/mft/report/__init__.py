"""Reports from saved run files: `mft report` (one run or reproduce directory) and `mft compare`.

A pure function of the files a run leaves behind (manifest, timings, eval/results.json and
outcomes.jsonl.gz, data/sizes.json, diversity.json): nothing here loads or runs a model, and torch is never
imported. See docs/report.md.

`LABELS` and `METHOD_ORDER` are the methods table's (`mft.methods`), re-exported for old imports.
"""

from __future__ import annotations

from mft.methods import LABELS
from mft.methods import REPORT_ORDER as METHOD_ORDER
from mft.report.build import build_report, write_report
from mft.report.compare import build_compare, write_compare
from mft.report.load import Study, load
from mft.report.tables import methods_table

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
