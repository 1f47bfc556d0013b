"""Render a profile report: JSON, Markdown, a self-contained HTML page (plots as base64 PNG) and a
rich terminal table. Plots use matplotlib's Agg backend."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from edgekd.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

PLOT_SECTIONS = ("pareto-latency", "pareto-flash", "memory-timeline", "macs-per-layer", "confusion-matrix")


# --------------------------------------------------------------------------------------------------
# formatting


def fmt_bytes(n: Any) -> str:
    if n is None:
        return "–"
    n = float(n)
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def fmt_ms(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def fmt_pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def fmt_int(v: Any) -> str:
    return "–" if v is None else f"{int(v):,}"


def quality(row: dict[str, Any]) -> tuple[float | None, str]:
    """The headline quality number of a row: top-1 for classifiers, AUC for anomaly detection."""
    a = row.get("accuracy") or {}
    if a.get("task") == "anomaly":
        return a.get("auc"), "AUC"
    return a.get("top1"), "top-1"


def _agreement(row: dict[str, Any]) -> float | None:
    return ((row.get("accuracy") or {}).get("vs_teacher") or {}).get("agreement")


def _arena_total(row: dict[str, Any]) -> int | None:
    tflm = (row.get("arena") or {}).get("tflm") or {}
    return tflm.get("total")


def short_label(label: str, width: int = 28) -> str:
    """A file label that fits a narrow column: ``arduino-nano-33-ble/model_int8.tflite`` -> ``arduino-n…/int8.tflite``."""
    if len(label) <= width:
        return label
    *dirs, name = label.split("/")
    name = name.removeprefix("model_")
    if not dirs:
        return name if len(name) <= width else name[: width - 1] + "…"
    room = max(4, width - len(name) - 1)
    head = "/".join(dirs)
    return (head if len(head) <= room else head[: room - 1] + "…") + "/" + name


def summary_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """The summary table as display strings: artifact, runtime, accuracy, agreement, p50, flash, arena."""
    out = []
    for r in report["artifacts"]:
        q, qname = quality(r)
        out.append({
            "artifact": r["label"],
            "runtime": f"{r.get('runtime') or '–'}" + (f" ({r.get('precision')})" if r.get("precision") else ""),
            "accuracy": (f"{q:.4f} AUC" if qname == "AUC" and q is not None else fmt_pct(q)),
            "agreement": fmt_pct(_agreement(r)),
            "p50_ms": fmt_ms((r.get("latency") or {}).get("p50_ms")),
            "flash": fmt_bytes(r.get("flash_bytes")),
            "arena": fmt_bytes(_arena_total(r)),
            "error": r.get("error") or "",
        })  # fmt: skip
    return out


SUMMARY_HEADERS = {"artifact": "Artifact", "runtime": "Runtime", "accuracy": "Accuracy",
                   "agreement": "Agreement", "p50_ms": "p50 (ms)", "flash": "Flash",
                   "arena": "Arena (TFLM)"}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# plots


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by another (lower x and higher y are better), sorted by x."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


_RUNTIME_COLORS = {"pytorch": "#c0392b", "onnxruntime": "#2471a3", "litert": "#229954", "litert-ref": "#b7950b",
                   "tflm": "#7d3c98"}  # fmt: skip
_ROLE_MARKERS = {"teacher": "s", "baseline": "P", "student": "o", "export": "^", "file": "D"}


def _pareto_plot(rows: list[dict[str, Any]], xkey: str, xlabel: str, title: str) -> bytes | None:
    """Quality vs latency (one point per row) or vs flash (one point per file), numbered points with a
    legend on the right (colour = runtime, marker = role) and the Pareto front dashed."""
    pts = []
    seen: set[str] = set()
    for r in rows:
        q, qname = quality(r)
        x = (r.get("latency") or {}).get("p50_ms") if xkey == "latency" else r.get("flash_bytes")
        if q is None or not x or (xkey == "flash" and r["path"] in seen):
            continue
        seen.add(r["path"])
        label = r["label"] if xkey == "flash" else f"{r['label']} @ {r['runtime']}"
        pts.append((float(x) if xkey == "latency" else float(x) / 1024, float(q), r, label))
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10.5, 4.4))
    for i, (x, y, r, label) in enumerate(pts, 1):
        color = _RUNTIME_COLORS.get(r.get("runtime") or "", "#555") if xkey == "latency" else "#2471a3"
        ax.scatter([x], [y], c=color, marker=_ROLE_MARKERS.get(r["role"], "o"), s=52, zorder=3,
                   edgecolors="white", linewidths=0.6, label=f"{i}  {label}")  # fmt: skip
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8, color="#333")
    front = _pareto_front([(x, y) for x, y, _, _ in pts])
    if len(front) > 1:
        ax.plot(*zip(*front), color="#888", ls="--", lw=1, zorder=2, label="Pareto front")
    xs = [p[0] for p in pts]
    if max(xs) / max(1e-9, min(xs)) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("AUC" if quality(pts[0][2])[1] == "AUC" else "top-1 accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5, frameon=False,
              ncol=1 if len(pts) <= 18 else 2)  # fmt: skip
    return _png(fig)


def _unique_files(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for r in rows:
        if r["path"] not in seen:
            seen.add(r["path"])
            out.append(r)
    return out


def _timeline_plot(row: dict[str, Any]) -> bytes | None:
    arena = row.get("arena") or {}
    tl = arena.get("timeline") or arena.get("greedy_timeline")
    if not tl:
        return None
    vals = [t.get("live_bytes", t.get("bytes", t.get("live", 0))) or 0 for t in tl]
    labels = [
        str(t.get("label") or t.get("opcode") or t.get("op_name") or t.get("op", i)) for i, t in enumerate(tl)
    ]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    ax.bar(range(len(vals)), [v / 1024 for v in vals], color="#5dade2", edgecolor="#2e86c1")
    ax.set_xticks(range(len(vals)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    for key, color, name in (
        ("greedy_head", "#e67e22", "greedy plan head"),
        ("optimized_head", "#27ae60", "optimized plan head"),
    ):
        if arena.get(key):
            ax.axhline(arena[key] / 1024, color=color, ls="--", lw=1, label=f"{name} {fmt_bytes(arena[key])}")
    if (arena.get("tflm") or {}).get("head"):
        ax.axhline(arena["tflm"]["head"] / 1024, color="#c0392b", ls=":", lw=1.2,
                   label=f"TFLM head (measured) {fmt_bytes(arena['tflm']['head'])}")  # fmt: skip
    tops = [v / 1024 for v in vals] + [
        arena[k] / 1024 for k in ("greedy_head", "optimized_head") if arena.get(k)
    ]
    ax.set_ylim(0, max(tops + [1e-3]) * 1.45)  # headroom for the legend
    ax.set_ylabel("live activation memory (KiB)")
    ax.set_title(f"Live memory per operator: {row['label']}", fontsize=10)
    ax.legend(fontsize=7.5, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _macs_plot(row: dict[str, Any]) -> bytes | None:
    layers = (row.get("macs") or {}).get("layers") or []
    if not layers:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.9, 0.9 + 0.28 * len(layers)))
    names = [
        layer["name"] if layer["type"] in layer["name"] else f"{layer['name']} ({layer['type']})"
        for layer in layers
    ]
    vals = [layer["macs"] for layer in layers]
    ax.barh(range(len(vals)), vals, color="#48c9b0", edgecolor="#17a589")
    ax.set_yticks(range(len(vals)))
    ax.set_yticklabels(names, fontsize=7.5)
    ax.invert_yaxis()
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:,}", va="center", fontsize=7)
    ax.set_xlabel("MACs per inference")
    ax.set_xlim(0, max(vals) * 1.25 if max(vals) else 1)
    ax.set_title(f"MACs per layer: {row['label']} (total {row['macs']['total']:,})", fontsize=10)
    return _png(fig)


def _confusion_plot(row: dict[str, Any], class_names: list[str] | None) -> bytes | None:
    a = row.get("accuracy") or {}
    cm = a.get("confusion_matrix")
    if not cm:
        return None
    import numpy as np

    m = np.asarray(cm)
    n = len(m)
    names = (
        (class_names or [str(i) for i in range(n)]) if a.get("task") != "anomaly" else ["normal", "anomaly"]
    )
    plt = _plt()
    size = min(7.0, 2.2 + 0.42 * n)
    fig, ax = plt.subplots(figsize=(size + 0.8, size))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(names[:n], rotation=45, ha="right", fontsize=7.5)
    ax.set_yticklabels(names[:n], fontsize=7.5)
    thresh = m.max() / 2 if m.size else 0
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > thresh else "#222")  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix: {row['id']}", fontsize=9)
    return _png(fig)


def _ok(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if not r.get("error")]


def _confusion_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Which rows get a confusion matrix: teacher, student, and the deployed (TFLM, else int8) model."""
    good = [r for r in _ok(rows) if (r.get("accuracy") or {}).get("confusion_matrix")]
    picked: list[dict[str, Any]] = []
    for want in (
        lambda r: r["role"] == "teacher",
        lambda r: r["role"] == "student",
        lambda r: r.get("runtime") == "tflm",
        lambda r: r.get("precision") == "int8",
    ):
        hit = next((r for r in good if want(r) and r not in picked), None)
        if hit is not None and len(picked) < 3:
            picked.append(hit)
    return picked or good[:1]


def make_plots(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every figure as ``{"section", "name", "title", "png"}``."""
    rows = report["artifacts"]
    ok = _ok(rows)
    plots: list[dict[str, Any]] = []

    def add(section: str, name: str, title: str, png: bytes | None) -> None:
        if png:
            plots.append({"section": section, "name": name, "title": title, "png": png})

    add("pareto-latency", "pareto_latency", "Accuracy vs p50 latency (host, batch 1)",
        _pareto_plot(ok, "latency", "p50 latency, ms (host)", "Accuracy vs latency"))  # fmt: skip
    add("pareto-flash", "pareto_flash", "Accuracy vs flash (model file size)",
        _pareto_plot(ok, "flash", "flash, KiB (model file)", "Accuracy vs flash"))  # fmt: skip
    for i, r in enumerate(f for f in _unique_files(rows) if f.get("arena")):
        add(
            "memory-timeline",
            f"memory_timeline_{i}",
            f"Live memory per operator: {r['label']}",
            _timeline_plot(r),
        )
    macs_files = [f for f in _unique_files(rows) if (f.get("macs") or {}).get("layers")]
    macs_files.sort(key=lambda r: {"student": 0, "export": 1, "file": 1, "teacher": 2}.get(r["role"], 3))
    chosen = [r for r in macs_files if r["role"] == "student"][:1]
    chosen += [r for r in macs_files if r.get("arena")][:2]
    chosen += [r for r in macs_files if r not in chosen][: max(0, 3 - len(chosen))]
    for i, r in enumerate(chosen):
        add("macs-per-layer", f"macs_{i}", f"MACs per layer: {r['label']}", _macs_plot(r))
    names = (report.get("data") or {}).get("class_names")
    for i, r in enumerate(_confusion_rows(rows)):
        add("confusion-matrix", f"confusion_{i}", f"Confusion matrix: {r['id']}", _confusion_plot(r, names))
    return plots


# --------------------------------------------------------------------------------------------------
# markdown


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    def esc(s: Any) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fit_rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for f in report.get("fit") or []:
        verdict = "PASS" if f["pass"] else "FAIL"
        out.append([f["target"], f["artifact"], f"{fmt_bytes(f['ram_needed'])} / {fmt_bytes(f['ram_limit'])}",
                    f"{fmt_bytes(f['flash_needed'])} / {fmt_bytes(f['flash_limit'])}", verdict])  # fmt: skip
    return out


FIT_HEADERS = ["Target", "Artifact", "RAM needed / limit", "Flash needed / limit", "Fit"]


def _cross_rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for r in _ok(report["artifacts"]):
        vt = (r.get("accuracy") or {}).get("vs_teacher")
        if not vt:
            continue
        c = vt["cross_table"]
        kl = vt.get("kl_divergence")
        out.append([r["id"], fmt_pct(vt["agreement"]), "–" if kl is None else f"{kl:.4f}", str(c["both_correct"]),
                    str(c["only_teacher"]), str(c["only_student"]), str(c["both_wrong"])])  # fmt: skip
    return out


CROSS_HEADERS = [
    "Artifact",
    "Agreement",
    "KL(teacher‖model)",
    "both correct",
    "only teacher",
    "only model",
    "both wrong",
]


def _num(v: float | None, spec: str, unit: str = "") -> str:
    return "–" if v is None else f"{v:{spec}}{unit}"


def _accuracy_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per-row accuracy details: top-1/top-5 (classification) or AUC/precision/recall/F1 (anomaly)."""
    good = [r for r in _ok(report["artifacts"]) if (r.get("accuracy") or {}).get("task")]
    if not good:
        return [], []
    if all("score_mean" in r["accuracy"] for r in good):  # autoencoders: AUC and numerics vs the reference
        heads = [
            "Artifact",
            "AUC",
            "F1",
            "Mean score (MSE)",
            "Max |err| vs ref",
            "SQNR vs ref",
            "Score rank corr.",
            "n",
        ]
        rows = []
        for r in good:
            a, vs = r["accuracy"], r["accuracy"].get("vs_teacher") or {}
            rows.append([r["id"], _num(a.get("auc"), ".4f"), _num(a.get("f1"), ".4f"), _num(a["score_mean"], ".4g"),
                         _num(vs.get("max_abs_error"), ".3g"), _num(vs.get("sqnr_db"), ".1f", " dB"),
                         _num(vs.get("score_spearman"), ".4f"), str(a["n"])])  # fmt: skip
        return heads, rows
    if all(r["accuracy"]["task"] == "anomaly" for r in good):
        heads = ["Artifact", "AUC", "Precision", "Recall", "F1", "Threshold", "n"]
        rows = [[r["id"], f"{r['accuracy']['auc']:.4f}" if r["accuracy"].get("auc") is not None else "–",
                 fmt_pct(r["accuracy"]["precision"]), fmt_pct(r["accuracy"]["recall"]),
                 f"{r['accuracy']['f1']:.4f}", f"{r['accuracy']['threshold']:.4g}", str(r["accuracy"]["n"])]
                for r in good]  # fmt: skip
        return heads, rows
    heads = ["Artifact", "Top-1", "Top-5", "n"]
    rows = [[r["id"], fmt_pct(r["accuracy"].get("top1")), fmt_pct(r["accuracy"].get("top5")), str(r["accuracy"]["n"])]
            for r in good]  # fmt: skip
    return heads, rows


def _latency_rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for r in _ok(report["artifacts"]):
        lat = r.get("latency") or {}
        rss = r.get("rss") or {}
        out.append([r["id"], r.get("kernels", ""), str(r.get("threads", "")), fmt_ms(lat.get("p50_ms")),
                    fmt_ms(lat.get("p90_ms")), fmt_ms(lat.get("p99_ms")), fmt_ms(lat.get("mean_ms")),
                    fmt_ms(lat.get("std_ms")), fmt_bytes(rss.get("delta_bytes")), fmt_bytes(rss.get("peak_bytes"))])  # fmt: skip
    return out


LATENCY_HEADERS = ["Artifact", "Kernels", "Threads", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms",
                   "RSS Δ load+run", "RSS peak"]  # fmt: skip


def _memory_rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for r in _unique_files(report["artifacts"]):
        arena = r.get("arena") or {}
        tflm = arena.get("tflm") or {}
        out.append([r["label"], r.get("precision") or r.get("format", ""), fmt_bytes(r.get("flash_bytes")),
                    fmt_int(r.get("params")), fmt_int((r.get("macs") or {}).get("total")),
                    fmt_bytes(tflm.get("head")), fmt_bytes(tflm.get("tail")), fmt_bytes(tflm.get("total")),
                    fmt_bytes(arena.get("greedy_head")), fmt_bytes(arena.get("optimized_head"))])  # fmt: skip
    return out


MEMORY_HEADERS = ["Model file", "Precision", "Flash", "Params", "MACs", "TFLM head", "TFLM tail", "TFLM total",
                  "Greedy head", "Optimized head"]  # fmt: skip


def _estimate_rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for r in _ok(report["artifacts"]):
        for target, est in (r.get("mcu_estimate") or {}).items():
            out.append([r["label"], target, f"{est['latency_ms']:.2f}", fmt_int(est["macs"]),
                        f"{est['clock_hz'] / 1e6:g} MHz", f"{est['cycles_per_mac']:g}"])  # fmt: skip
    return out


ESTIMATE_HEADERS = ["Artifact", "Target", "Estimated latency (ms)", "MACs", "Clock", "Cycles/MAC"]


def _per_class_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    names = (report.get("data") or {}).get("class_names") or []
    good = [r for r in _ok(report["artifacts"]) if (r.get("accuracy") or {}).get("per_class_accuracy")]
    if not good or not names:
        return [], []
    if len(names) <= 16:  # one row per artifact, one column per class
        headers = ["Artifact"] + [str(n) for n in names]
        rows = [[r["id"]] + [fmt_pct(v) for v in r["accuracy"]["per_class_accuracy"]] for r in good]
        return headers, rows
    headers = ["Class"] + [r["id"] for r in good]
    rows = []
    for i, name in enumerate(names):
        rows.append([name] + [fmt_pct(r["accuracy"]["per_class_accuracy"][i]) for r in good])
    return headers, rows


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
    sections = [
        ("Fit per target", FIT_HEADERS, fit_rows(report)),
        ("Accuracy", *_accuracy_rows(report)),
        ("Student vs teacher", CROSS_HEADERS, _cross_rows(report)),
        ("Latency and host memory", LATENCY_HEADERS, _latency_rows(report)),
        ("Model memory", MEMORY_HEADERS, _memory_rows(report)),
        ("MCU latency estimate (from MACs, not measured)", ESTIMATE_HEADERS, _estimate_rows(report)),
    ]
    for title, heads, rows in sections:
        if rows:
            parts += ["", f"## {title}", "", _md_table(heads, rows)]
    ph, pr = _per_class_rows(report)
    if pr:
        parts += ["", "## Per-class accuracy", "", _md_table(ph, pr)]
    if plot_files:
        parts += ["", "## Plots", ""]
        parts += [f"![{name}]({path})" for name, path in plot_files.items()]
    if report.get("notes"):
        parts += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(parts) + "\n"


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

    detail = [
        ("accuracy", "Accuracy", *_accuracy_rows(report)),
        ("student-vs-teacher", "Student vs teacher (counts on the test data)", CROSS_HEADERS, _cross_rows(report)),
        ("latency", "Latency and host memory", LATENCY_HEADERS, _latency_rows(report)),
        ("memory", "Model memory", MEMORY_HEADERS, _memory_rows(report)),
        ("mcu-estimate", "MCU latency estimate (from MACs × cycles/MAC ÷ clock; an estimate, not a measurement)",
         ESTIMATE_HEADERS, _estimate_rows(report)),
    ]  # fmt: skip
    section_notes = _section_notes(report)
    for sid, title, heads, rows in detail:
        if rows:
            left = {"latency": 2, "memory": 2, "mcu-estimate": 2}.get(sid, 1)
            note = "".join(f'<p class="note">{esc(n)}</p>' for n in section_notes.get(sid, []))
            out.append(
                f'<section id="{sid}"><h2>{esc(title)}</h2>{_html_table(heads, rows, left=left)}{note}</section>'
            )
    ph, pr = _per_class_rows(report)
    if pr:
        out.append(f'<section id="per-class"><h2>Per-class accuracy</h2>{_html_table(ph, pr)}</section>')
    if report.get("notes"):
        items = "".join(f"<li>{esc(n)}</li>" for n in report["notes"])
        out.append(f'<section id="notes"><h2>Notes</h2><ul class="note">{items}</ul></section>')
    out.append("</main></body></html>")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# terminal


def print_summary(report: dict[str, Any], console: Any = None) -> None:
    """The summary table (and fit table) with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="edgekd profile", header_style="bold")
    for key, head in SUMMARY_HEADERS.items():
        if key in ("artifact", "runtime"):
            table.add_column(head, justify="left", no_wrap=True, overflow="ellipsis", ratio=2)
        else:
            table.add_column(head, justify="right", ratio=1)
    errors = []
    for r in summary_rows(report):
        r["artifact"] = short_label(r["artifact"])
        if r["error"]:
            errors.append(f"{r['artifact']} ({r['runtime']}): {r['error']}")
            table.add_row(r["artifact"], r["runtime"], "[red]error[/red]", "", "", r["flash"], "")
        else:
            table.add_row(*(r[k] for k in SUMMARY_HEADERS))
    console.print(table)
    for e in errors:
        console.print(f"[red]error[/red] {e}", highlight=False, soft_wrap=True)
    if report.get("device_measured"):  # edgekd bench results beside the estimates
        from edgekd.harness.bench import device_table

        console.print(device_table(report["device_measured"]))
    frows = fit_rows(report)
    if frows:
        ft = Table(title="fit per target", header_style="bold")
        for h in FIT_HEADERS:
            ft.add_column(h)
        for row in frows:
            row = row[:-1] + ["[green]PASS[/green]" if row[-1] == "PASS" else "[red]FAIL[/red]"]
            ft.add_row(*row)
        console.print(ft)


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
