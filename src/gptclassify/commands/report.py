"""`gptclassify report`: a finished run, shown in one self-contained HTML page."""

from __future__ import annotations

from ..inference.report import gather
from ..inference.report_html import write_report


def cmd_report(args) -> None:
    print(f"wrote {write_report(gather(args.run, args.data, args.split, args.device))}")
