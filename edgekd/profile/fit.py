"""The targets a profile is judged against: the fit table (does a full-integer ``.tflite`` fit a
microcontroller's RAM and flash) and the notes for targets whose memory is not a TFLite Micro arena."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edgekd.profile.memory import ram_needed


def load_targets(names: Iterable[str] | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Targets from :mod:`edgekd.targets` as plain dicts (name, ram_bytes, flash_bytes, clock_hz,
    cycles_per_mac); ``names=None`` means all. Returns ``(targets, notes)``."""
    try:
        from edgekd.targets import list_targets, load_target
    except ImportError:
        return [], ["edgekd.targets is not available: no fit table or MCU estimates"]
    all_targets = list_targets(strict=False)
    chosen = all_targets if names is None else [load_target(n) for n in names]
    out = []
    for t in chosen:
        d = t.as_dict() if hasattr(t, "as_dict") else dict(t)
        mhz = d.get("clock_mhz")
        out.append({
            "name": d["name"], "kind": d.get("kind"), "cpu": d.get("cpu"),
            "ram_bytes": d.get("ram_bytes"), "flash_bytes": d.get("flash_bytes"),
            "clock_hz": d.get("clock_hz") or (float(mhz) * 1e6 if mhz else None),
            "cycles_per_mac": d.get("cycles_per_mac"), "cycles_per_mac_source": d.get("cycles_per_mac_source"),
            "runtime": d.get("runtime"), "quantization": d.get("quantization"),
        })  # fmt: skip
    return out, []


def fit_table(rows: list[dict[str, Any]], targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per full-integer ``.tflite`` (once per file) and microcontroller target, with the one fit rule of
    :func:`edgekd.targets.fit_check` (RAM = TFLM arena total, flash = model bytes)."""
    from edgekd.targets import fit_check

    seen: set[str] = set()
    fit = []
    for row in rows:
        if row.get("format") != "tflite" or not row.get("arena") or row["path"] in seen:
            continue
        seen.add(row["path"])
        ram = ram_needed(row["arena"])
        for t in targets:
            res = fit_check(t, row["flash_bytes"], ram)
            if res["fits"] is None and not res["rows"]:
                continue  # not a TFLite Micro target: its memory is not an arena (see the notes)
            ram_row, flash_row = res["rows"]
            fit.append({
                "artifact": row["label"], "path": row["path"], "target": t["name"],
                "ram_needed": ram, "ram_limit": t.get("ram_bytes"), "ram_ok": ram_row["ok"],
                "flash_needed": row["flash_bytes"], "flash_limit": t.get("flash_bytes"), "flash_ok": flash_row["ok"],
                "pass": bool(res["fits"]), "rule": res["rule"],
                "ram_note": "TFLM arena total (host-measured; tail is smaller on 32-bit MCUs)",
            })  # fmt: skip
    return fit


def non_mcu_notes(targets: list[dict[str, Any]]) -> list[str]:
    from edgekd.targets import fit_check

    out = []
    for t in targets:
        res = fit_check(t, 0, 0)
        if res["fits"] is None and "note" in res:
            out.append(f"fit for {t['name']}: {res['note']}")
    return out
