"""The self-contained HTML report (plots as base64 PNG)."""

from __future__ import annotations

import base64
import html
from typing import Any

from edgekd.profile.report.plots import PLOT_SECTIONS, make_plots
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

# --------------------------------------------------------------------------------------------------
# HTML

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f4f6f8;color:#1c2833}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 10px;padding-bottom:4px;border-bottom:2px solid #d5dbe1}
.meta{color:#5d6d7e;font-size:13px;margin-bottom:6px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
th,td{padding:6px 9px;border-bottom:1px solid #e5e8eb;text-align:right;white-space:nowrap}
th{background:#eaf0f6;font-weight:600;color:#283747}
td.l,th.l{text-align:left}
tr:hover td{background:#f8fbff}
td.err{color:#b03a2e;text-align:left;white-space:normal;max-width:420px}
.pass{color:#1e8449;font-weight:700}.fail{color:#b03a2e;font-weight:700}
.plots{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;background:#fff;padding:10px;box-shadow:0 1px 2px rgba(0,0,0,.08);border-radius:4px;max-width:100%}
figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:12px;color:#5d6d7e;margin-top:4px}
.note{font-size:13px;color:#5d6d7e}.empty{font-size:13px;color:#7f8c8d;font-style:italic}
.scroll{overflow-x:auto}
"""


def _html_table(
    headers: list[str], rows: list[list[str]], cls: dict[int, str] | None = None, left: int = 1
) -> str:
    """A table; the first ``left`` columns (text) are left-aligned, the rest (numbers) right-aligned."""
    cls = dict(cls or {})
    for i in range(left):
        cls.setdefault(i, "l")
    th = "".join(
        ('<th class="l">' if i < left else "<th>") + f"{html.escape(h)}</th>" for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            klass = cls.get(i)
            if c == "PASS":
                klass = "pass"
            elif c == "FAIL":
                klass = "fail"
            attr = f' class="{klass}"' if klass else ""
            cells.append(f"<td{attr}>{html.escape(str(c))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
    )


def _section_notes(report: dict[str, Any]) -> dict[str, list[str]]:
    """Short explanations shown under detail tables (how RSS was measured, where cycles/MAC come from)."""
    notes: dict[str, list[str]] = {}
    rss_method = next((r["rss"]["method"] for r in report["artifacts"] if r.get("rss")), None)
    notes["latency"] = [
        "Latency: wall time of one batch-1 call through each runtime's Python API (input already prepared and "
        "quantized; includes the API's call overhead), percentiles over the timed runs after warm-up."
    ]
    if rss_method:
        notes["latency"].append(f"Host RSS: {rss_method}. Δ is the growth over the RSS just before loading.")
    notes["memory"] = [
        "Flash = model file size. Params of a PyTorch model include BatchNorm (folded away in exports). "
        "TFLM head/tail/total measured with the tflite-micro host interpreter; greedy/optimized head from "
        "edgekd's arena planner (optimized: best operator order and placement found)."
    ]
    est = []
    for t in report.get("targets") or []:
        if t.get("cycles_per_mac"):
            src = t.get("cycles_per_mac_source") or "no source given"
            est.append(f"{t['name']}: {t['cycles_per_mac']:g} cycles/MAC ({src})")
    if est:
        notes["mcu-estimate"] = [
            "Estimate = MACs × cycles/MAC ÷ clock; ignores non-MAC ops and memory stalls."
        ] + est
    return notes


def render_html(report: dict[str, Any], plots: list[dict[str, Any]] | None = None) -> str:
    """A self-contained HTML page: summary table first, then fit, plots and detail tables."""
    plots = make_plots(report) if plots is None else plots
    src = report.get("source") or {}
    data = report.get("data") or {}
    s = report["settings"]
    esc = html.escape
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>edgekd profile report</title><style>{CSS}</style></head><body><main>",
           "<h1>edgekd profile report</h1>"]  # fmt: skip
    out.append(f'<div class="meta">Source: <code>{esc(str(src.get("run_dir") or ", ".join(src.get("files", []))))}</code>'
               f" · created {esc(report['created'])} · host {esc(report['host']['machine'])}, "
               f"{report['host']['cpus']} CPUs, Python {esc(report['host']['python'])}</div>")  # fmt: skip
    data_txt = (f"Test data: <b>{esc(str(data['name']))}</b>, {data['n_test']} samples, task {esc(data['task'])}. "
                if data else "No test data: accuracy not measured. ")  # fmt: skip
    out.append(f'<div class="meta">{data_txt}Latency on the host: batch 1, {s["warmup"]} warm-up + {s["runs"]} '
               f"timed runs, {s['threads']} thread(s).</div>")  # fmt: skip

    out.append('<section id="summary"><h2>Summary</h2>')
    srows = summary_rows(report)
    heads = list(SUMMARY_HEADERS.values()) + ["Error"]
    out.append(
        _html_table(
            heads, [[r[k] for k in SUMMARY_HEADERS] + [r["error"]] for r in srows], {7: "err"}, left=2
        )
    )
    out.append("</section>")

    out.append('<section id="fit"><h2>Fit per target</h2>')
    frows = fit_rows(report)
    if frows:
        out.append(_html_table(FIT_HEADERS, frows, left=2))
        out.append('<p class="note">RAM needed = TFLite Micro arena total measured on the 64-bit host (the '
                   "persistent tail is smaller on 32-bit MCUs); flash needed = model file size. Application code, "
                   "stack and I/O buffers are not included.</p>")  # fmt: skip
    else:
        out.append('<p class="empty">No full-integer .tflite model or no targets: nothing to check.</p>')
    out.append("</section>")

    by_section: dict[str, list[dict[str, Any]]] = {}
    for p in plots:
        by_section.setdefault(p["section"], []).append(p)
    titles = {"pareto-latency": "Accuracy vs latency", "pareto-flash": "Accuracy vs flash",
              "memory-timeline": "Memory timeline per operator", "macs-per-layer": "MACs per layer",
              "confusion-matrix": "Confusion matrix"}  # fmt: skip
    for sec in PLOT_SECTIONS:
        out.append(f'<section id="{sec}"><h2>{titles[sec]}</h2>')
        if by_section.get(sec):
            out.append('<div class="plots">')
            for p in by_section[sec]:
                b64 = base64.b64encode(p["png"]).decode("ascii")
                out.append(f'<figure><img id="plot-{esc(p["name"])}" alt="{esc(p["title"])}" '
                           f'src="data:image/png;base64,{b64}"><figcaption>{esc(p["title"])}</figcaption></figure>')  # fmt: skip
            out.append("</div>")
        else:
            out.append('<p class="empty">Not available for these artifacts.</p>')
        out.append("</section>")

    section_titles = {"accuracy": "Accuracy", "student-vs-teacher": "Student vs teacher (counts on the test data)",
                      "latency": "Latency and host memory", "memory": "Model memory",
                      "mcu-estimate": "MCU latency estimate (from MACs × cycles/MAC ÷ clock; an estimate, not a measurement)"}  # fmt: skip
    section_notes = _section_notes(report)
    for sid, heads, rows in detail_sections(report):
        title = section_titles[sid]
        if rows:
            left = {"latency": 2, "memory": 2, "mcu-estimate": 2}.get(sid, 1)
            note = "".join(f'<p class="note">{esc(n)}</p>' for n in section_notes.get(sid, []))
            out.append(
                f'<section id="{sid}"><h2>{esc(title)}</h2>{_html_table(heads, rows, left=left)}{note}</section>'
            )
    ph, pr = per_class_rows(report)
    if pr:
        out.append(f'<section id="per-class"><h2>Per-class accuracy</h2>{_html_table(ph, pr)}</section>')
    for folder, summary, rows in layer_sections(report):
        table = (
            _html_table(LAYER_HEADERS, rows, left=3) + f'<p class="note">{esc(LAYER_NOTE)}</p>'
            if rows
            else ""
        )
        out.append(f'<section class="layers"><h2>Per-layer float vs int8: <code>{esc(folder)}</code></h2>'
                   f"<p>{esc(summary)}</p>{table}</section>")  # fmt: skip
    if report.get("notes"):
        items = "".join(f"<li>{esc(n)}</li>" for n in report["notes"])
        out.append(f'<section id="notes"><h2>Notes</h2><ul class="note">{items}</ul></section>')
    out.append("</main></body></html>")
    return "\n".join(out)
