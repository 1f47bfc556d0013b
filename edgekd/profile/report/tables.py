"""Report tables as display strings: formatting, the summary, fit, accuracy, latency, memory, estimates."""

from __future__ import annotations

from typing import Any

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
# markdown


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


def detail_sections(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The detail tables every report renders, in order: ``(section id, headers, rows)``."""
    return [
        ("accuracy", *_accuracy_rows(report)),
        ("student-vs-teacher", CROSS_HEADERS, _cross_rows(report)),
        ("latency", LATENCY_HEADERS, _latency_rows(report)),
        ("memory", MEMORY_HEADERS, _memory_rows(report)),
        ("mcu-estimate", ESTIMATE_HEADERS, _estimate_rows(report)),
    ]


def per_class_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
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


def _ok(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if not r.get("error")]


def _unique_files(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for r in rows:
        if r["path"] not in seen:
            seen.add(r["path"])
            out.append(r)
    return out


# --------------------------------------------------------------------------------------------------
# per-layer float-vs-int8 diff (edgekd profile --layers)

LAYER_HEADERS = [
    "#",
    "Layer",
    "TFLite op",
    "SQNR dB",
    "SQNR alone dB",
    "Max |error|",
    "Clipped",
    "Top-1 alone",
]


def _db(v: Any) -> str:
    return "–" if v is None else f"{v:.1f}"


def layer_sections(report: dict[str, Any]) -> list[tuple[str, str, list[list[str]]]]:
    """``(export folder, summary line or error, rows)`` for each per-layer report."""
    out = []
    for lr in report.get("layers") or []:
        if lr.get("error"):
            out.append((lr["folder"], f"error: {lr['error']}", []))
            continue
        rows = [[str(r["operator"]), r["name"], r["op"], _db(r["sqnr_db"]), _db(r["sqnr_alone_db"]),
                 f"{r['max_abs_error']:.3g}", f"{100 * r['clipped']:.2f}%", fmt_pct(r.get("accuracy_alone"))]
                for r in lr["layers"]]  # fmt: skip
        out.append((lr["folder"], lr["summary"], rows))
    return out


LAYER_NOTE = ("SQNR: the dequantized int8 activation against the float one (error accumulated up to the layer); "
              "SQNR alone: the float activation quantized with this tensor's int8 scale only; top-1 alone: the "
              "float model with only this layer int8 (weights, bias, output). Reference kernels, same samples.")  # fmt: skip
