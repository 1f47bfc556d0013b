"""``edgekd export``: ONNX / TFLite / TFLite Micro export of a run folder or an ONNX file."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import click

from edgekd.commands._common import run_folder_locked, trust_option, wire_options
from edgekd.errors import set_interrupt_message

if TYPE_CHECKING:
    from edgekd.export.options import FirmwareWriter


@click.command("export")
@click.argument("source", type=click.Path())
@click.option("--target", "-t", help="Target profile name (see `edgekd targets`) or a board .yaml file.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "tflite", "c"]),
    help="Export one format instead of a target.",
)
@click.option(
    "--firmware", is_flag=True, help="Also write benchmark firmware projects (C backend, TFLite Micro)."
)
@wire_options
@click.option("--quant", "-q", help="fp32 | fp16 | dynamic | int8, a comma list, or all (ONNX: fp32 | int8).")
@click.option(
    "--calibration",
    "-c",
    help="Calibration recipe .yaml (calibration/) or .npz with x (N, C, H, W), optional y (labels) and task.",
)
@click.option(
    "--eval",
    "eval_data",
    type=click.Path(dir_okay=False),
    help="An .npz (x, optional y, task) to judge the export on (default: the test split, else a held-out "
    "part of --calibration).",
)
@click.option("--route", type=click.Choice(["onnx2tf", "litert-torch"]),
              help="Conversion route (default: onnx2tf, falling back to litert-torch).")  # fmt: skip
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True, help="ONNX int8 calibration method (onnxruntime).")  # fmt: skip
@click.option("--ranges", type=click.Choice(["auto", "minmax", "percentile", "mse", "learned"]),
              help="TFLite int8 activation ranges: auto (the best int8 accuracy on the validation split), "
                   "min/max (the converter's), percentile or MSE-optimal clipping, or learned (a QAT student's "
                   "own; auto includes them) (default: the calibration recipe's, else auto).")  # fmt: skip
@click.option(
    "--output",
    "-o",
    "out",
    type=click.Path(),
    help="Export folder (default RUN_DIR/export/<name>, or <model>_export/<name>/ next to a file); it is "
    "replaced as a whole, so it must be new, empty or an earlier export.",
)
@click.option("--quiet", is_flag=True, help="Only errors and the folder name.")
@click.option("--all-networks", is_flag=True,
              help="Export every network the run produced (networks.json: peers, generations) into "
                   "RUN_DIR/export/<target>-<network>/, not only the final student.")  # fmt: skip
@trust_option
def command(source: str, target: str | None, fmt: str | None, firmware: bool, mlperf_model: str | None,
            input_format: str | None, results: str | None, quant: str | None, calibration: str | None,
            eval_data: str | None, route: str | None, method: str, ranges: str | None, out: str | None,
            quiet: bool, all_networks: bool) -> None:  # fmt: skip
    """Export SOURCE (a run folder, a .onnx file or an edgekd .pt) for a --target or a --format.

    \b
    edgekd export runs/demo --format onnx --quant int8
    edgekd export runs/demo --format tflite --quant fp32,int8
    edgekd export runs/demo --target arduino-nano-33-ble
    edgekd export model.onnx --target tflite-micro --calibration data.npz -o out/
    edgekd export ae.onnx --target tflite-micro --calibration calib.npz --eval test.npz
    edgekd export runs/demo --target cortex-m4-qemu --firmware    (C backend + firmware)
    edgekd export model_int8.tflite --format c              (model_int8_export/c/)
    edgekd export model_int8.tflite --target nucleo-l4r5zi  (C array, op resolver, arena, fit check)
    """
    from edgekd.export import ExportOptions, export_networks, export_run

    set_interrupt_message(
        "export cancelled; exports are built in a temporary folder, so the previous export is intact"
    )
    options = ExportOptions(target=target, fmt=fmt, quant=quant, calibration=calibration, eval_data=eval_data,
                            route=route, method=method, ranges=ranges, out=out, quiet=quiet,
                            firmware=_firmware_writer(mlperf_model, input_format, results) if firmware else None)  # fmt: skip
    if source.lower().endswith(".tflite"):
        from pathlib import Path

        from edgekd.export.from_tflite import check_options

        check_options(Path(source), {"--calibration": calibration, "--eval": eval_data, "--route": route,
                                     "--method": _given("method") and method, "--ranges": ranges, "--all-networks": all_networks})  # fmt: skip
        click.echo(str(export_run(source, options)))
        return
    with run_folder_locked(source):
        if all_networks:
            for name, folder in export_networks(source, options).items():
                click.echo(f"{name}: {folder}")
        else:
            click.echo(str(export_run(source, options)))


def _given(param: str) -> bool:
    """True when the user typed ``--param`` (not its default)."""
    from click.core import ParameterSource

    return click.get_current_context().get_parameter_source(param) is not ParameterSource.DEFAULT


def _firmware_writer(model_name: str | None, input_format: str | None, results: str | None) -> FirmwareWriter:
    """``--firmware``: the harness's project writer, handed to the export (which sits below the harness),
    with the firmware's MLPerf Tiny settings (``--mlperf-model`` ...)."""
    from edgekd.harness.firmware_project import write_firmware

    return functools.partial(
        write_firmware, model_name=model_name, input_format=input_format, results=results
    )
