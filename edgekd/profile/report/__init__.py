"""Render a profile report: JSON, Markdown, a self-contained HTML page (plots as base64 PNG) and a
rich terminal table. Split as TFLite Micro keeps its parts apart: ``tables`` (rows as display strings),
``plots``, and one renderer each (``markdown``, ``html_page``, ``terminal``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from edgekd.profile.report.html_page import render_html
from edgekd.profile.report.markdown import render_markdown
from edgekd.profile.report.plots import PLOT_SECTIONS, make_plots
from edgekd.profile.report.tables import fmt_bytes, fmt_ms, fmt_pct, quality, short_label, summary_rows
from edgekd.profile.report.terminal import print_summary

__all__ = ["PLOT_SECTIONS", "fmt_bytes", "fmt_ms", "fmt_pct", "load_report", "make_plots", "print_summary", "quality",
           "render_html", "render_markdown", "short_label", "summary_rows", "write_reports"]  # fmt: skip

# --------------------------------------------------------------------------------------------------
# files


def write_reports(
    report: dict[str, Any],
    *,
    json_path: str | Path | None = None,
    md_path: str | Path | None = None,
    html_path: str | Path | None = None,
    plots_dir: str | Path | None = None,
) -> dict[str, Path]:
    """Write whichever of the JSON / Markdown / HTML reports have paths (atomically); PNGs go to
    ``plots_dir`` when given. Returns the paths written."""
    written: dict[str, Path] = {}
    if json_path:
        written["json"] = atomic_write_json(json_path, report)
    plots = make_plots(report) if (md_path or html_path or plots_dir) else []
    plot_files: dict[str, str] = {}
    if plots_dir:
        plots_dir = Path(plots_dir)
        for p in plots:
            f = atomic_write_bytes(plots_dir / f"{p['name']}.png", p["png"])
            base = Path(md_path).parent if md_path else plots_dir.parent
            try:
                plot_files[p["title"]] = str(f.relative_to(base))
            except ValueError:
                plot_files[p["title"]] = str(f)
    if md_path:
        written["md"] = atomic_write_text(md_path, render_markdown(report, plot_files))
    if html_path:
        written["html"] = atomic_write_text(html_path, render_html(report, plots))
    return written


def load_report(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
