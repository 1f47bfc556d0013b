"""The Markdown report."""

from __future__ import annotations

from typing import Any

from edgekd.profile.report.tables import (
    FIT_HEADERS,
    LAYER_HEADERS,
    LAYER_NOTE,
    SUMMARY_HEADERS,
    detail_sections,
    fit_rows,
    layer_sections,
    per_class_rows,
    summary_rows,
)

TITLES = {"accuracy": "Accuracy", "student-vs-teacher": "Student vs teacher", "latency": "Latency and host memory",
          "memory": "Model memory", "mcu-estimate": "MCU latency estimate (from MACs, not measured)"}  # fmt: skip


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    def esc(s: Any) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: dict[str, Any], plot_files: dict[str, str] | None = None) -> str:
    """The report as Markdown (plots linked from ``plot_files``: name -> relative path)."""
    src = report.get("source") or {}
    data = report.get("data") or {}
    parts = ["# edgekd profile report", ""]
    parts.append(f"Source: `{src.get('run_dir') or ', '.join(src.get('files', []))}` · created {report['created']} · "
                 f"host {report['host']['machine']} ({report['host']['cpus']} CPUs)")  # fmt: skip
    if data:
        parts.append(f"\nTest data: **{data['name']}**, {data['n_test']} samples, task {data['task']}.")
    s = report["settings"]
    parts.append(
        f"Latency: batch 1, {s['warmup']} warm-up + {s['runs']} timed runs, {s['threads']} thread(s).\n"
    )
    parts += ["## Summary", ""]
    srows = summary_rows(report)
    heads = list(SUMMARY_HEADERS.values()) + ["Error"]
    parts.append(_md_table(heads, [[r[k] for k in SUMMARY_HEADERS] + [r["error"]] for r in srows]))
    sections = [("Fit per target", FIT_HEADERS, fit_rows(report))]
    sections += [(TITLES[sid], heads, rows) for sid, heads, rows in detail_sections(report)]
    for title, heads, rows in sections:
        if rows:
            parts += ["", f"## {title}", "", _md_table(heads, rows)]
    ph, pr = per_class_rows(report)
    if pr:
        parts += ["", "## Per-class accuracy", "", _md_table(ph, pr)]
    for folder, summary, rows in layer_sections(report):
        parts += ["", f"## Per-layer float vs int8: `{folder}`", "", summary]
        if rows:
            parts += ["", _md_table(LAYER_HEADERS, rows), "", LAYER_NOTE]
    if plot_files:
        parts += ["", "## Plots", ""]
        parts += [f"![{name}]({path})" for name, path in plot_files.items()]
    if report.get("notes"):
        parts += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(parts) + "\n"
