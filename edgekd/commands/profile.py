"""``edgekd profile RUN_DIR`` or ``edgekd profile FILE...``: latency, memory and accuracy side by side."""

from __future__ import annotations

from pathlib import Path

import click

from edgekd.commands._common import trust_option
from edgekd.errors import EdgekdError, set_interrupt_message


@click.command("profile")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data",
    default=None,
    help="Test data for FILE mode: a data set name (edgekd normalisation), data.json or .npz (used as given).",
)
@click.option(
    "--teacher",
    type=click.Path(path_type=Path),
    default=None,
    help="FILE mode: model to compare the others with.",
)
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write the JSON report here."
)
@click.option(
    "--md", "md_path", type=click.Path(path_type=Path), default=None, help="Write the Markdown report here."
)
@click.option(
    "--html", "html_path", type=click.Path(path_type=Path), default=None, help="Write the HTML report here."
)
@click.option(
    "--runs", default=50, show_default=True, type=click.IntRange(1), help="Timed runs per artifact (batch 1)."
)
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(0), help="Untimed warm-up runs.")
@click.option(
    "--threads", default=1, show_default=True, type=click.IntRange(1), help="Threads for host runtimes."
)
@click.option(
    "--samples", default=None, type=click.IntRange(1), help="Use a seeded subset of N test samples."
)
@click.option(
    "--runtime",
    "runtimes",
    multiple=True,
    help="Only these runtimes (pytorch, onnxruntime, litert, litert-ref, tflm); repeatable.",
)
@click.option(
    "--rss",
    type=click.Choice(["off", "subprocess", "inprocess"]),
    default="off",
    show_default=True,
    help="Host peak RSS per artifact: off, a fresh process per artifact (slower, meaningful), or VmHWM in "
    "this process (mixes every runtime loaded so far; for debugging).",
)
@click.option(
    "--target", "targets", multiple=True, help="Targets for the fit table and MCU estimate (default: all)."
)
@click.option("--layers", is_flag=True,
              help="Per-layer float-vs-int8 diff of every export (SQNR, max error, accuracy with one layer "
                   "int8) and the layers that cost the most; run folders only.")  # fmt: skip
@click.option("--all-networks", is_flag=True,
              help="Profile every network the run produced (networks.json) side by side on its test split, "
                   "into RUN_DIR/report-networks.{json,md,html}.")  # fmt: skip
@trust_option
def command(
    paths: tuple[Path, ...],
    data: str | None,
    teacher: Path | None,
    json_path: Path | None,
    md_path: Path | None,
    html_path: Path | None,
    runs: int,
    warmup: int,
    threads: int,
    samples: int | None,
    runtimes: tuple[str, ...],
    rss: str,
    targets: tuple[str, ...],
    layers: bool = False,
    all_networks: bool = False,
) -> None:
    """Profile a run folder (teacher, student, every export) or any .pt/.onnx/.tflite FILEs.

    A run folder gets report.json, report.md and report.html; FILE mode writes only the reports asked
    for. Exit code 1 when some artifact failed (its row says why), 2 for bad input.
    """
    set_interrupt_message("profiling cancelled; reports are written atomically, so earlier ones are intact")
    from edgekd.inputs import check_model_file
    from edgekd.profile import ProfileOptions, profile_files, profile_networks, profile_run
    from edgekd.profile.report import print_summary

    opts = ProfileOptions(targets=list(targets) or None, runs=runs, warmup=warmup, threads=threads, samples=samples,
                          runtimes=list(runtimes) or None, rss=rss, json_path=json_path, md_path=md_path,
                          html_path=html_path, layers=layers)  # fmt: skip
    opts.check_runtimes()
    dirs = [p for p in paths if p.is_dir()]
    if dirs:
        if len(paths) > 1:
            raise EdgekdError(f"{dirs[0]}: give one run folder, or model files, not both")
        if data is not None or teacher is not None:
            raise EdgekdError(
                "--data and --teacher are for FILE mode; a run folder uses its data.json and teacher.pt"
            )
        from edgekd.runfolder import RunFolder

        run = RunFolder(paths[0])
        run.check_unlocked()  # a train/distill still writing it: refused at once
        for model_file in (run.student, run.model, run.teacher):
            if model_file.exists():
                check_model_file(model_file)  # a corrupt run file is an input error (exit 2), not a row
        if all_networks:
            report = profile_networks(run.root, opts)
            click.echo(f"reports: {run.root / 'report-networks.html'}, .md, .json", err=True)
        else:
            report = profile_run(paths[0], opts)
            click.echo(f"reports: {paths[0] / 'report.html'}, report.md, report.json", err=True)
    else:
        if layers:
            raise EdgekdError(
                "--layers: give a run folder (its export folders hold the int8 model and its float twin)"
            )
        bad = []
        for p in paths:
            try:
                check_model_file(p)
            except EdgekdError as e:
                bad.append(e)
        if len(bad) == len(paths):  # nothing to profile: bad input (one good file still gets profiled)
            raise bad[0]
        if teacher is not None:
            check_model_file(teacher)
        report = profile_files(paths, data, teacher=teacher, options=opts)
    print_summary(report)
    from edgekd.safetext import plain

    for n in report.get("notes", []):  # notes name files and ops: shown without escape sequences
        click.echo(f"note: {plain(n)}", err=True)
    for lr in report.get("layers") or []:
        click.echo(f"layers {plain(lr['folder'])}: {plain(lr.get('error') or lr['summary'])}", err=True)
    failed = [r for r in report["artifacts"] if r.get("error")]
    if failed:
        click.echo(
            f"{len(failed)} of {len(report['artifacts'])} artifact(s) failed; see the error column", err=True
        )
        # (click returns, rather than raises, Exit codes under standalone_mode=False; exit directly)
        raise SystemExit(1)
