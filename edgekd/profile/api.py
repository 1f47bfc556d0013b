"""Profile a run folder or a list of model files: one row per (artifact, runtime), all on the same
test data, then write ``report.json`` / ``report.md`` / ``report.html``.

A failure in one artifact is stored in its row's ``error`` and the others are still profiled; only
when nothing could be profiled is an :class:`EdgekdError` raised. How to profile (runs, threads,
runtimes, targets, report paths) is one :class:`~edgekd.profile.options.ProfileOptions`.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edgekd.data.evalset import EvalSet, data_from_info, resolve_data
from edgekd.errors import EdgekdError, error_line
from edgekd.profile.fit import fit_table, load_targets, non_mcu_notes
from edgekd.profile.options import ProfileOptions
from edgekd.profile.rows import Artifact, RowContext, file_facts, profile_row
from edgekd.provenance import provenance
from edgekd.runfolder import RunFolder
from edgekd.runtimes import runtimes_for

REPORT_VERSION = 1  # report.json's provenance header: schema edgekd-report/1


def _host() -> dict[str, Any]:
    return {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "processor": platform.processor() or None}  # fmt: skip


def _sha(path: Path) -> str | None:
    from edgekd.files import file_sha256

    try:
        return file_sha256(path)
    except (OSError, EdgekdError):
        return None


def _facts_or_error(art: Artifact) -> dict[str, Any]:
    """:func:`file_facts`, or the error text and what is known without reading the model."""
    try:
        return file_facts(art.path)
    except Exception as e:  # noqa: BLE001
        # keep going: the runtime's own load error (if any) names the problem best
        facts = {"facts_error": f"{art.path}: {error_line(e)}", "format": art.path.suffix.lstrip(".").lower()}
        if art.path.exists():
            facts["flash_bytes"] = art.path.stat().st_size
        return facts


class _Profiler:
    """The rows of one report, in order, with the teacher's outputs once the teacher row has run."""

    def __init__(self, data: EvalSet | None, opts: ProfileOptions, notes: list[str]) -> None:
        self.data, self.opts, self.notes = data, opts, notes
        self.targets, tnotes = load_targets(opts.targets)
        self.notes.extend(tnotes)
        self.rows: list[dict[str, Any]] = []
        self.teacher_outputs = None
        self.hashes: dict[str, str] = {}

    def add(self, art: Artifact) -> None:
        """Rows for ``art`` on every runtime that applies (once per distinct file content)."""
        digest = _sha(art.path)
        if digest and digest in self.hashes:
            self.notes.append(f"{art.label}: identical to {self.hashes[digest]}; profiled once")
            return
        if digest:
            self.hashes[digest] = art.label
        facts = _facts_or_error(art)
        known = {k: v for k, v in facts.items() if k != "facts_error"}
        try:
            choices = runtimes_for(art.path, list(self.opts.runtimes) if self.opts.runtimes else None)
        except EdgekdError as e:
            self.rows.append({"id": art.label, "label": art.label, "role": art.role, "path": str(art.path),
                              "runtime": None, "error": str(e), **known})  # fmt: skip
            return
        for runtime, skip_reason in choices:
            if skip_reason:
                self.notes.append(f"{art.label}: {runtime} skipped ({skip_reason})")
                continue
            ctx = RowContext(self.data, self.teacher_outputs, self.opts, self.targets)
            row, ref = profile_row(art, runtime, facts, ctx)
            if facts.get("facts_error") and not row["error"]:
                self.notes.append(f"{art.label}: MACs/params/arena not available ({facts['facts_error']})")
            if ref is not None and self.teacher_outputs is None:
                self.teacher_outputs = ref
            self.rows.append(row)


def profile_artifacts(
    artifacts: list[Artifact],
    data: EvalSet | None,
    options: ProfileOptions | None = None,
    *,
    source: dict[str, Any] | None = None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """Profile artifacts (teacher first so the others compare with it) and return the report dict."""
    opts = options or ProfileOptions()
    profiler = _Profiler(data, opts, list(notes or []))
    for art in sorted(artifacts, key=lambda a: a.role != "teacher"):
        profiler.add(art)
    if not profiler.rows:
        raise EdgekdError("nothing to profile: no model files found")
    return {
        **provenance("report", REPORT_VERSION),
        "source": source or {},
        "host": _host(),
        "settings": opts.settings(int(len(data.x)) if data is not None else None),
        "data": data.describe() if data is not None else None,
        "targets": profiler.targets,
        "artifacts": profiler.rows,
        "fit": fit_table(profiler.rows, profiler.targets),
        "notes": profiler.notes + non_mcu_notes(profiler.targets),
    }


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


def _write(report: dict[str, Any], opts: ProfileOptions, plots_dir: Path | None) -> None:
    from edgekd.profile.report import write_reports

    write_reports(report, json_path=opts.json_path, md_path=opts.md_path, html_path=opts.html_path,
                  plots_dir=plots_dir)  # fmt: skip


def _open_run(run_dir: str | os.PathLike) -> tuple[RunFolder, list[Artifact]]:
    """The run folder and its artifacts; EdgekdError when it is not a run folder or holds no model."""
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
    return run, arts


def profile_run(
    run_dir: str | os.PathLike, options: ProfileOptions | None = None, *, write: bool = True
) -> dict[str, Any]:
    """Profile teacher, student and every export of a run folder on its test split.

    Writes ``report.json``, ``report.md``, ``report.html`` and ``plots/`` in the run folder (or the
    options' paths) unless ``write=False``; returns the report dict.
    """
    opts = options or ProfileOptions()
    run, arts = _open_run(run_dir)
    notes = []
    data = None
    if run.data_info.exists():
        data = data_from_info(run.read_json(run.data_info), opts.samples)
    else:
        notes.append(f"{run.data_info} missing: accuracy not measured (latency and memory only)")
    report = profile_artifacts(arts, data, opts, source={"run_dir": str(run.root)}, notes=notes)
    from edgekd.profile.report.bench_file import device_row  # measured on a device: bench/<target>/bench.json

    report["device_measured"] = device_row(run.root)
    if opts.layers:
        report["layers"] = _layer_reports(run, data)
    if write:
        _write(report, opts.with_outputs(run.report("json").with_suffix("")), run.plots)
    return report


def _layer_reports(run: RunFolder, data: EvalSet | None) -> list[dict[str, Any]]:
    """:func:`edgekd.profile.layers.layer_report` of every export folder with an int8 model and its
    float twin (a failure is that folder's ``error``)."""
    from edgekd.profile.layers import export_folders, layer_report

    if data is None:
        return [{"folder": str(run.export_root), "error": "no data.json: the per-layer diff needs samples"}]
    out = []
    for folder in export_folders(run.export_root):
        try:
            out.append(layer_report(folder, data))
        except EdgekdError as e:
            out.append({"folder": str(folder), "error": str(e)})
    if not out:
        out.append({"folder": str(run.export_root), "error": "no export folder with model_int8.tflite and "
                    "model_fp32.tflite: re-export with this edgekd (it writes the float twin)"})  # fmt: skip
    return out


def _find_data_json(path: Path) -> Path | None:
    for parent in list(path.resolve().parents)[:3]:
        if (parent / "data.json").is_file():
            return parent / "data.json"
    return None


def _file_artifacts(paths: list[Path], teacher: str | os.PathLike | None) -> list[Artifact]:
    arts = []
    if teacher is not None:
        arts.append(Artifact(Path(teacher), "teacher", f"teacher ({Path(teacher).name})"))
    names = [p.name for p in paths]
    for p in paths:
        role = "teacher" if p.stem == "teacher" and teacher is None else "file"
        label = p.name if names.count(p.name) == 1 else f"{p.parent.name}/{p.name}"
        arts.append(Artifact(p, role, label))
    return arts


def profile_files(
    paths: Iterable[str | os.PathLike],
    data: Any = None,
    *,
    teacher: str | os.PathLike | None = None,
    options: ProfileOptions | None = None,
) -> dict[str, Any]:
    """Profile any ``.pt`` / ``.onnx`` / ``.tflite`` files.

    ``data``: a data set name, a ``data.json`` or an ``.npz`` (see :func:`edgekd.data.evalset.resolve_data`);
    without it the ``data.json`` of an enclosing run folder is used, else only latency and memory are
    measured. ``teacher``: a model the others are compared with (a file named ``teacher.pt`` is one too).
    Only the report files whose paths the options give are written.
    """
    opts = options or ProfileOptions()
    paths = [Path(p) for p in paths]
    if not paths:
        raise EdgekdError("no model files given")
    notes: list[str] = []
    eval_data = resolve_data(data, opts.samples)
    if eval_data is None:
        found = _find_data_json(paths[0])
        if found is not None:
            eval_data = resolve_data(found, opts.samples)
            notes.append(f"test data from {found}")
        else:
            notes.append("no --data given: accuracy not measured (latency and memory only)")
    arts = _file_artifacts(paths, teacher)
    report = profile_artifacts(arts, eval_data, opts, source={"files": [str(p) for p in paths]}, notes=notes)
    ok = [r for r in report["artifacts"] if not r.get("error")]
    if not ok:
        first = report["artifacts"][0]["error"]
        more = f" (and {len(report['artifacts']) - 1} more failures)" if len(report["artifacts"]) > 1 else ""
        raise EdgekdError(f"{first}{more}")
    if opts.json_path or opts.md_path or opts.html_path:
        _write(report, opts, opts.md_path.parent / "plots" if opts.md_path else None)
    return report


def profile_networks(run_dir: str | os.PathLike, options: ProfileOptions | None = None) -> dict[str, Any]:
    """Every network a run produced (``networks.json``) side by side on its test split, compared with
    its teacher, into ``RUN_DIR/report-networks.{json,md,html}`` (or the options' paths)."""
    from edgekd.inputs import check_model_file
    from edgekd.networks import list_networks

    run = RunFolder(run_dir)
    nets = list(list_networks(run.root).values())
    for f in nets:
        check_model_file(f)
    opts = (options or ProfileOptions()).with_outputs(run.root / "report-networks")
    teacher = run.teacher if run.teacher.exists() else None
    return profile_files(nets, str(run.data_info), teacher=teacher, options=opts)
