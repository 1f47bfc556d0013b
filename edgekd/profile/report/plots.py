"""Report plots (matplotlib Agg, PNG bytes): Pareto fronts, memory timeline, MACs per layer, confusion."""

from __future__ import annotations

import io
from typing import Any

from edgekd.profile.report.tables import _ok, _unique_files, fmt_bytes, quality

PLOT_SECTIONS = ("pareto-latency", "pareto-flash", "memory-timeline", "macs-per-layer", "confusion-matrix")


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
