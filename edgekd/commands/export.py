"""``edgekd export``: ONNX / TFLite / TFLite Micro export of a run folder or an ONNX file."""

from __future__ import annotations

import click

from edgekd.commands._common import run_folder_locked, trust_option
from edgekd.errors import set_interrupt_message


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
def command(source: str, target: str | None, fmt: str | None, firmware: bool, quant: str | None,
            calibration: str | None, eval_data: str | None, route: str | None, method: str, out: str | None,
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
    set_interrupt_message(
        "export cancelled; exports are built in a temporary folder, so the previous export is intact"
    )
    if source.lower().endswith(".tflite"):
        click.echo(str(_export_tflite(source, target, fmt, quant, out, firmware, quiet, {
            "--calibration": calibration, "--eval": eval_data, "--route": route,
            "--method": _given("method") and method, "--all-networks": all_networks})))  # fmt: skip
        return
    with run_folder_locked(source):
        _export_source(source, target, fmt, firmware, quant, calibration, eval_data, route, method, out, quiet,
                       all_networks)  # fmt: skip


def _export_source(source: str, target: str | None, fmt: str | None, firmware: bool, quant: str | None,
                   calibration: str | None, eval_data: str | None, route: str | None, method: str,
                   out: str | None, quiet: bool, all_networks: bool) -> None:  # fmt: skip
    """A run folder, .onnx or .pt: C backend sources, every network of the run, or one export."""
    from edgekd.export.api import export_model
    from edgekd.export.c_backend.export import export_c, wants_c_export

    if wants_c_export(source, target, fmt, firmware):
        kw = {"quant": quant, "calibration": calibration, "method": method}
        click.echo(
            str(export_c(source, target=target, fmt=fmt, out=out, firmware=firmware, quiet=quiet, **kw))
        )
        return

    if all_networks:
        from pathlib import Path

        from edgekd.errors import EdgekdError
        from edgekd.names import child_path
        from edgekd.networks import list_networks

        if not Path(source).is_dir() or out:
            raise EdgekdError("--all-networks takes a run folder and writes into its export/ (no --output)")
        label = target or fmt or "export"
        child_path(Path(source), "export", source, "folder")  # a link named export/ must not lead out
        for name, model_file in list_networks(source).items():
            dest = child_path(
                Path(source) / "export", f"{Path(label).stem}-{name}", "--target", "export folder"
            )
            folder = export_model(str(model_file), target=target, fmt=fmt, quant=quant, calibration=calibration,
                                  out=str(dest), eval_data=eval_data, route=route, method=method, quiet=quiet)  # fmt: skip
            click.echo(f"{name}: {folder}")
        return
    folder = export_model(source, target=target, fmt=fmt, quant=quant, calibration=calibration, out=out,
                          eval_data=eval_data, route=route, method=method, quiet=quiet)  # fmt: skip
    click.echo(str(folder))


def _given(param: str) -> bool:
    """True when the user typed ``--param`` (not its default)."""
    from click.core import ParameterSource

    return click.get_current_context().get_parameter_source(param) is not ParameterSource.DEFAULT


def _export_tflite(source: str, target: str | None, fmt: str | None, quant: str | None, out: str | None,
                   firmware: bool, quiet: bool, other: dict[str, object]) -> object:  # fmt: skip
    """A ``.tflite``: TFLite Micro artifacts for --target, C sources for --format c (edgekd.export.from_tflite)."""
    from pathlib import Path

    from edgekd.export.from_tflite import check_options, export_tflite

    check_options(Path(source), other)
    writer = None
    if firmware:
        from edgekd.harness.firmware_project import write_firmware

        writer = write_firmware
    return export_tflite(source, target=target, fmt=fmt, quant=quant, out=out, firmware=writer, quiet=quiet)
