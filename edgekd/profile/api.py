"""Profile a run folder or a list of model files: one row per (artifact, runtime), all on the same
test data, then write ``report.json`` / ``report.md`` / ``report.html``.

A failure in one artifact is stored in its row's ``error`` and the others are still profiled; only
when nothing could be profiled is an :class:`EdgekdError` raised.
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import EdgekdError, error_line
from edgekd.profile import accuracy as acc
from edgekd.profile import macs as macs_mod
from edgekd.profile.latency import latency_stats, mcu_latency_estimate
from edgekd.profile.memory import flash_bytes, measure_peak_rss, ram_needed, subprocess_peak_rss, tflite_arena
from edgekd.profile.runtimes import RUNTIMES, open_runtime, runtimes_for
from edgekd.provenance import provenance
from edgekd.runfolder import RunFolder

REPORT_VERSION = 1  # report.json's provenance header: schema edgekd-report/1
NATIVE_SUFFIXES = (".tflite",)  # run by native runtimes that trust the file: profiled in a child process


@dataclass
class EvalData:
    """Test inputs (normalised float32, data layout) and labels the models are compared on."""

    x: np.ndarray
    y: np.ndarray | None
    num_classes: int | None
    class_names: list[str] | None
    name: str
    task: str | None = "classification"  # classification | reconstruction | None (infer from the outputs)
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "n_test": int(len(self.x)), "sample_shape": list(self.x.shape[1:]),
                "num_classes": self.num_classes, "class_names": self.class_names, "task": self.task,
                **self.info}  # fmt: skip


@dataclass
class Artifact:
    path: Path
    role: str  # teacher | baseline | student | export | file
    label: str


# --------------------------------------------------------------------------------------------------
# data


def _subsample(
    x: np.ndarray, y: np.ndarray | None, samples: int | None
) -> tuple[np.ndarray, np.ndarray | None]:
    if samples is None or samples >= len(x):
        return x, y
    idx = np.sort(np.random.default_rng(0).choice(len(x), size=int(samples), replace=False))
    return x[idx], (y[idx] if y is not None else None)


def _task_of(info: dict[str, Any]) -> str:
    """``data.json``'s ``task`` (``classification`` | ``reconstruction``; missing = classification)."""
    from edgekd.export.checks import normalize_task

    task = info.get("task") or info.get("load_args", {}).get("task")
    return normalize_task(task, "data.json") or "classification"


def data_from_info(info: dict[str, Any], samples: int | None = None) -> EvalData:
    """The test split described by a run folder's ``data.json``."""
    from edgekd.data import load_data_from_info

    splits = load_data_from_info(info)
    x, y = _subsample(splits.test.x, splits.test.y, samples)
    return EvalData(x, y, splits.num_classes, list(splits.class_names), splits.name, _task_of(info))


def resolve_data(data: Any, samples: int | None = None) -> EvalData | None:
    """``None``, an :class:`EvalData`, a registered data set name (edgekd's normalisation), a run
    folder's ``data.json`` or an ``.npz`` with ``x``/``y`` (or ``x_test``/``y_test``) used as given."""
    if data is None or isinstance(data, EvalData):
        return data
    p = Path(str(data)).expanduser()
    if p.suffix == ".json":
        from edgekd.export.source import read_data_info

        return data_from_info(read_data_info(p), samples)
    if p.suffix == ".npz":
        from edgekd.data.registry import check_labels
        from edgekd.files import MAX_EVAL_NPZ_BYTES, load_npz

        arrays = load_npz(p, MAX_EVAL_NPZ_BYTES, "evaluation data")  # headers first: a zip bomb is refused
        xk, yk = ("x_test", "y_test") if "x_test" in arrays else ("x", "y")
        if xk not in arrays:
            raise EdgekdError(f"{p}: missing array 'x' (found {', '.join(arrays) or 'none'})")
        if arrays[xk].ndim < 1 or len(arrays[xk]) == 0 or arrays[xk].dtype.kind not in "biuf":
            raise EdgekdError(
                f"{p}: array {xk!r} has shape {arrays[xk].shape} {arrays[xk].dtype}; expected numbers"
            )
        x = arrays[xk].astype(np.float32)
        y = check_labels(arrays[yk], str(p), yk, len(x)) if yk in arrays else None
        from edgekd.export.checks import normalize_task

        task = normalize_task(arrays.get("task"), f"{p}: array 'task'")  # None: inferred per model
        x, y = _subsample(x, y, samples)
        n_cls = int(y.max()) + 1 if y is not None and len(y) and task != "reconstruction" else None
        names = [str(i) for i in range(n_cls)] if n_cls else None
        return EvalData(
            x, y, n_cls, names, p.name, task, {"note": "npz arrays used as given (no normalisation)"}
        )
    from edgekd.data import load_data

    splits = load_data(str(data))
    x, y = _subsample(splits.test.x, splits.test.y, samples)
    return EvalData(x, y, splits.num_classes, list(splits.class_names), splits.name)


# --------------------------------------------------------------------------------------------------
# targets


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


# --------------------------------------------------------------------------------------------------
# per-file and per-row work


def _file_facts(path: Path) -> dict[str, Any]:
    """Properties of the file itself, shared by every runtime row: flash, params, MACs, arena."""
    facts: dict[str, Any] = {"flash_bytes": flash_bytes(path), "format": path.suffix.lstrip(".").lower()}
    ext = path.suffix.lower()
    if ext in (".pt", ".pth"):
        from edgekd.models import load_model

        model, record = load_model(path)
        shape = record.get("kwargs", {}).get("input_shape")
        facts["model_name"] = record.get("name")
        if shape is not None:
            facts["macs"] = macs_mod.torch_macs(model, shape)
    elif ext == ".onnx":
        facts["macs"] = macs_mod.onnx_macs(path)
    elif ext == ".tflite":
        from edgekd.graph import read_tflite
        from edgekd.profile.runtimes import read_model_bytes

        data = read_model_bytes(path)
        read_tflite(data, source=str(path))  # structural validation, the file named in the message
        facts["macs"] = macs_mod.tflite_macs(data)
        from edgekd.profile.runtimes import tflite_precision

        precision, full = tflite_precision(data)
        facts["precision"] = precision
        if full:
            facts["arena"] = tflite_arena(data)
    if "macs" in facts:
        facts["params"] = facts["macs"]["params"]
    return facts


def _task(data: EvalData, outputs: np.ndarray) -> str:
    """The data's task, else the export's rule (:func:`edgekd.export.source.infer_task`)."""
    if data.task:
        return data.task
    from edgekd.export.source import infer_task

    return infer_task(tuple(data.x.shape[1:]), int(outputs.reshape(len(outputs), -1).shape[1]))[0]


def _model_inputs(rt: Any, data: EvalData) -> np.ndarray:
    from edgekd.profile.runtimes import adapt_input

    return adapt_input(data.x, rt.input_shape, rt.channels_last, rt.path)


def _accuracy(rt: Any, data: EvalData, outputs: np.ndarray, teacher: np.ndarray | None) -> dict[str, Any]:
    """Metrics of one row; ``teacher`` is the reference model's outputs on the same data."""
    task = _task(data, outputs)
    out = outputs.reshape(len(outputs), -1)
    if task == "reconstruction":
        x = _model_inputs(rt, data)
        scores = acc.reconstruction_scores(out, x)
        t_out = None if teacher is None else teacher.reshape(len(teacher), -1)
        if data.y is not None:
            res = acc.anomaly_metrics(
                scores, data.y, None if t_out is None else acc.reconstruction_scores(t_out, x)
            )
        else:
            res = {"task": "reconstruction", "n": int(len(out)), "note": "no anomaly labels: no AUC"}
        res["score_mean"] = float(scores.mean())
        if t_out is not None:
            res.setdefault("vs_teacher", {}).update(acc.reconstruction_metrics(out, t_out, x))
        return res
    if data.y is None:
        return {"note": "data has no labels"}
    n_cls = data.num_classes or out.shape[1]
    if out.shape[1] != n_cls:
        raise EdgekdError(
            f"{rt.path}: model has {out.shape[1]} outputs but the data set {data.name!r} has {n_cls} classes"
        )
    return acc.classification_metrics(out, data.y, n_cls, teacher)


def _profile_row(
    art: Artifact,
    runtime: str,
    facts: dict[str, Any],
    data: EvalData | None,
    teacher_outputs: np.ndarray | None,
    settings: dict[str, Any],
    targets: list[dict[str, Any]],
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Profile one artifact on one runtime. Returns ``(row, outputs used as the teacher reference)``."""
    cls = RUNTIMES[runtime]
    row: dict[str, Any] = {
        "id": f"{art.label} @ {runtime}",
        "label": art.label,
        "role": art.role,
        "path": str(art.path),
        "runtime": runtime,
        "kernels": cls.kernels,
        "error": None,
        **{k: v for k, v in facts.items() if k != "facts_error"},
    }
    if art.path.suffix.lower() in NATIVE_SUFFIXES:
        from edgekd.graph import read_tflite

        try:
            read_tflite(art.path)  # a corrupt file never reaches a runtime (nor costs a child process)
        except EdgekdError as e:
            row["error"] = str(e)
            return row, None
        return _native_row(row, art, runtime, facts, data, teacher_outputs, settings, targets)
    return _measure_row(row, art, runtime, facts, data, teacher_outputs, settings, targets)


def _native_row(row: dict[str, Any], art: Artifact, runtime: str, *args: Any) -> tuple[dict[str, Any], Any]:
    """:func:`_measure_row` in a forked child with a time and memory limit (LiteRT / TFLite Micro crash
    on corrupt models); a crash becomes the row's one-line error."""
    from edgekd.child import ChildFailed, run_in_child

    try:
        return run_in_child(_measure_row, row, art, runtime, *args, what=f"{art.path}: {runtime}")
    except ChildFailed as e:
        row["error"] = str(_located(e, art.path) if runtime == "tflm" else e)
    except EdgekdError as e:
        row["error"] = str(e)
    return row, None


def _located(e: Any, path: Path) -> Any:
    """A TFLite Micro crash with the operator it happened in, when a model prefix reproduces it."""
    from edgekd.graph.tflm import crash_operator
    from edgekd.profile.runtimes import read_model_bytes

    if e.kind != "signal":
        return e
    try:
        op = crash_operator(read_model_bytes(path), str(path))
    except EdgekdError:
        return e
    return e.replace(at=f" at or before {op}") if op else e


def _measure_row(
    row: dict[str, Any],
    art: Artifact,
    runtime: str,
    facts: dict[str, Any],
    data: EvalData | None,
    teacher_outputs: np.ndarray | None,
    settings: dict[str, Any],
    targets: list[dict[str, Any]],
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Load, time and evaluate one artifact on one runtime, filling ``row``."""
    rt = None
    ref_outputs = None
    try:
        x1 = data.x[:1] if data is not None else None

        def load_and_run_once() -> Any:
            r = open_runtime(runtime, art.path, threads=settings["threads"])
            sample = (
                x1
                if x1 is not None
                else np.random.default_rng(0).standard_normal(r.input_shape).astype(np.float32)
            )
            r.runner(sample)()
            return r, sample

        if settings.get("rss") == "subprocess":
            rt, sample = load_and_run_once()
            rss = subprocess_peak_rss(runtime, art.path, settings["threads"])
        elif settings.get("rss") == "inprocess":
            (rt, sample), rss = measure_peak_rss(load_and_run_once)
        else:  # off: in-process figures mix every runtime loaded so far, so none is shown
            rt, sample = load_and_run_once()
            rss = None
        row["precision"] = facts.get("precision") or rt.precision
        row["input_shape"] = list(rt.input_shape)
        row["rss"] = rss
        row["threads"] = settings["threads"] if runtime not in ("tflm",) else 1
        row["latency"] = latency_stats(rt.runner(sample), settings["warmup"], settings["runs"])
        if runtime == "tflm" and "macs" in facts:
            row["mcu_estimate"] = {
                t["name"]: mcu_latency_estimate(facts["macs"]["total"], t["clock_hz"], t["cycles_per_mac"])
                for t in targets
                if t.get("clock_hz") and t.get("cycles_per_mac")
            }
        if data is not None:
            outputs = rt.predict(data.x)
            row["accuracy"] = _accuracy(rt, data, outputs, None if art.role == "teacher" else teacher_outputs)
            if art.role == "teacher":  # the reference the others compare with
                ref_outputs = outputs
    except Exception as e:  # noqa: BLE001  (one artifact's failure must not stop the others)
        text = error_line(e)  # a runtime's own exception does not name the file: say which one failed
        row["error"] = text if isinstance(e, EdgekdError) else f"{art.path}: {runtime} failed ({text})"
    finally:
        if rt is not None:
            rt.close()
    return row, ref_outputs


def _fit_table(rows: list[dict[str, Any]], targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


def _non_mcu_notes(targets: list[dict[str, Any]]) -> list[str]:
    from edgekd.targets import fit_check

    out = []
    for t in targets:
        res = fit_check(t, 0, 0)
        if res["fits"] is None and "note" in res:
            out.append(f"fit for {t['name']}: {res['note']}")
    return out


def _host() -> dict[str, Any]:
    return {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "processor": platform.processor() or None}  # fmt: skip


def _sha(path: Path) -> str | None:
    from edgekd.files import regular_file

    try:
        regular_file(path)  # a FIFO or a link to /dev/zero is never read
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except (OSError, EdgekdError):
        return None


def profile_artifacts(
    artifacts: list[Artifact],
    data: EvalData | None,
    *,
    targets: Iterable[str] | None = None,
    runs: int = 50,
    warmup: int = 10,
    threads: int = 1,
    runtimes: list[str] | None = None,
    rss: str = "off",
    source: dict[str, Any] | None = None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """Profile artifacts (teacher first so the others compare with it) and return the report dict.

    ``rss``: ``"inprocess"`` (VmHWM reset around load + one inference) or ``"subprocess"`` (a fresh
    process per row: slower, includes the runtime's libraries)."""
    if rss not in ("off", "inprocess", "subprocess"):
        raise EdgekdError(f"rss={rss!r}: use 'off', 'subprocess' or 'inprocess'")
    settings = {"runs": int(runs), "warmup": int(warmup), "threads": int(threads), "batch": 1,
                "runtimes": runtimes, "rss": rss,
                "samples": int(len(data.x)) if data is not None else None}  # fmt: skip
    target_list, tnotes = load_targets(targets)
    notes = list(notes or []) + tnotes
    artifacts = sorted(artifacts, key=lambda a: a.role != "teacher")
    rows: list[dict[str, Any]] = []
    teacher_outputs = None
    hashes: dict[str, str] = {}
    for art in artifacts:
        digest = _sha(art.path)
        if digest and digest in hashes:
            notes.append(f"{art.label}: identical to {hashes[digest]}; profiled once")
            continue
        if digest:
            hashes[digest] = art.label
        try:
            facts = _file_facts(art.path)
        except Exception as e:  # noqa: BLE001
            # keep going: the runtime's own load error (if any) names the problem best
            facts = {
                "facts_error": f"{art.path}: {error_line(e)}",
                "format": art.path.suffix.lstrip(".").lower(),
            }
            if art.path.exists():
                facts["flash_bytes"] = art.path.stat().st_size
        try:
            choices = runtimes_for(art.path, runtimes)
        except EdgekdError as e:
            rows.append({"id": art.label, "label": art.label, "role": art.role, "path": str(art.path),
                         "runtime": None, "error": str(e), **{k: v for k, v in facts.items() if k != "facts_error"}})  # fmt: skip
            continue
        for runtime, skip_reason in choices:
            if skip_reason:
                notes.append(f"{art.label}: {runtime} skipped ({skip_reason})")
                continue
            row, ref = _profile_row(art, runtime, facts, data, teacher_outputs, settings, target_list)
            if facts.get("facts_error") and not row["error"]:
                notes.append(f"{art.label}: MACs/params/arena not available ({facts['facts_error']})")
            if ref is not None and teacher_outputs is None:
                teacher_outputs = ref
            rows.append(row)
    if not rows:
        raise EdgekdError("nothing to profile: no model files found")
    report = {
        **provenance("report", REPORT_VERSION),
        "source": source or {},
        "host": _host(),
        "settings": settings,
        "data": data.describe() if data is not None else None,
        "targets": target_list,
        "artifacts": rows,
        "fit": _fit_table(rows, target_list),
        "notes": notes + _non_mcu_notes(target_list),
    }
    return report


# --------------------------------------------------------------------------------------------------
# entry points


def _nested_model(folder: Path) -> Path | None:
    """The main model of a nested run folder (``student.pt``, else ``model.pt``)."""
    for name in ("student.pt", "model.pt"):
        if (folder / name).is_file():
            return folder / name
    return None


def run_artifacts(run: RunFolder) -> list[Artifact]:
    """Every model in a run folder: the teacher (``teacher.pt``, else ``teacher/`` trained by ``edgekd
    run``), a labels-only ``baseline/`` student, the student (or label-trained model), every export file."""
    arts = []
    if run.teacher.exists():
        arts.append(Artifact(run.teacher, "teacher", "teacher"))
    elif (nested := _nested_model(run.root / "teacher")) is not None:
        arts.append(Artifact(nested, "teacher", "teacher"))
    if (nested := _nested_model(run.root / "baseline")) is not None:
        arts.append(Artifact(nested, "baseline", "baseline (labels only)"))
    for p, label in ((run.student, "student"), (run.model, "model")):
        if p.exists():
            arts.append(Artifact(p, "student", label))
    if run.export_root.is_dir():
        for p in sorted(run.export_root.rglob("*")):
            if p.is_file() and p.suffix.lower() in (".onnx", ".tflite"):
                arts.append(Artifact(p, "export", str(p.relative_to(run.export_root))))
    return arts


def _write(
    report: dict[str, Any], json_path: Any, md_path: Any, html_path: Any, plots_dir: Path | None
) -> None:
    from edgekd.profile.report import write_reports

    write_reports(report, json_path=json_path, md_path=md_path, html_path=html_path, plots_dir=plots_dir)


def profile_run(
    run_dir: str | os.PathLike,
    *,
    targets: Iterable[str] | None = None,
    runs: int = 50,
    threads: int = 1,
    json_path: str | os.PathLike | None = None,
    md_path: str | os.PathLike | None = None,
    html_path: str | os.PathLike | None = None,
    warmup: int = 10,
    samples: int | None = None,
    runtimes: list[str] | None = None,
    rss: str = "off",
    write: bool = True,
) -> dict[str, Any]:
    """Profile teacher, student and every export of a run folder on its test split.

    Writes ``report.json``, ``report.md``, ``report.html`` and ``plots/`` in the run folder (or the
    given paths) unless ``write=False``; returns the report dict.
    """
    run = RunFolder(run_dir)
    if not run.root.is_dir():
        raise EdgekdError(f"{run.root}: not a run folder (no such directory)")
    try:
        names = [p.name for p in run.root.iterdir()]
    except OSError as e:
        raise EdgekdError(f"{run.root}: cannot read the run folder ({e.strerror})") from None
    arts = run_artifacts(run)
    if not arts:
        raise EdgekdError(
            f"{run.root}: no teacher.pt, student.pt, model.pt or export/*.onnx|tflite here "
            f"(found: {', '.join(sorted(names)[:8]) or 'nothing'}); run `edgekd distill`/`edgekd export` first"
        )
    notes = []
    data = None
    if run.data_info.exists():
        data = data_from_info(run.read_json(run.data_info), samples)
    else:
        notes.append(f"{run.data_info} missing: accuracy not measured (latency and memory only)")
    report = profile_artifacts(arts, data, targets=targets, runs=runs, warmup=warmup, threads=threads,
                               runtimes=runtimes, rss=rss, source={"run_dir": str(run.root)}, notes=notes)  # fmt: skip
    from edgekd.profile.report.bench_file import device_row  # measured on a device: bench/<target>/bench.json

    report["device_measured"] = device_row(run.root)
    if write:
        _write(
            report,
            json_path or run.report("json"),
            md_path or run.report("md"),
            html_path or run.report("html"),
            run.plots,
        )
    return report


def _find_data_json(path: Path) -> Path | None:
    for parent in list(path.resolve().parents)[:3]:
        if (parent / "data.json").is_file():
            return parent / "data.json"
    return None


def profile_files(
    paths: Iterable[str | os.PathLike],
    data: Any = None,
    *,
    teacher: str | os.PathLike | None = None,
    targets: Iterable[str] | None = None,
    runs: int = 50,
    threads: int = 1,
    json_path: str | os.PathLike | None = None,
    md_path: str | os.PathLike | None = None,
    html_path: str | os.PathLike | None = None,
    warmup: int = 10,
    samples: int | None = None,
    runtimes: list[str] | None = None,
    rss: str = "off",
) -> dict[str, Any]:
    """Profile any ``.pt`` / ``.onnx`` / ``.tflite`` files.

    ``data``: a data set name, a ``data.json`` or an ``.npz`` (see :func:`resolve_data`); without it
    the ``data.json`` of an enclosing run folder is used, else only latency and memory are measured.
    ``teacher``: a model the others are compared with (a file named ``teacher.pt`` is one too).
    Only the report files whose paths are given are written.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise EdgekdError("no model files given")
    notes: list[str] = []
    eval_data = resolve_data(data, samples)
    if eval_data is None:
        found = _find_data_json(paths[0])
        if found is not None:
            eval_data = resolve_data(found, samples)
            notes.append(f"test data from {found}")
        else:
            notes.append("no --data given: accuracy not measured (latency and memory only)")
    arts = []
    if teacher is not None:
        arts.append(Artifact(Path(teacher), "teacher", f"teacher ({Path(teacher).name})"))
    names = [p.name for p in paths]
    for p in paths:
        role = "teacher" if p.stem == "teacher" and teacher is None else "file"
        label = p.name if names.count(p.name) == 1 else f"{p.parent.name}/{p.name}"
        arts.append(Artifact(p, role, label))
    report = profile_artifacts(arts, eval_data, targets=targets, runs=runs, warmup=warmup, threads=threads,
                               runtimes=runtimes, rss=rss, source={"files": [str(p) for p in paths]}, notes=notes)  # fmt: skip
    ok = [r for r in report["artifacts"] if not r.get("error")]
    if not ok:
        first = report["artifacts"][0]["error"]
        more = f" (and {len(report['artifacts']) - 1} more failures)" if len(report["artifacts"]) > 1 else ""
        raise EdgekdError(f"{first}{more}")
    if json_path or md_path or html_path:
        plots = Path(md_path).parent / "plots" if md_path else None
        _write(report, json_path, md_path, html_path, plots)
    return report
