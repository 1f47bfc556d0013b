"""``edgekd export``: ONNX / TFLite / TFLite Micro export of a run folder or an ONNX file."""

from __future__ import annotations

import click


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
    "--calibration", "-c", help="Calibration recipe .yaml (calibration/) or .npz with x (N, C, H, W)."
)
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True, help="ONNX int8 calibration method (onnxruntime).")  # fmt: skip
@click.option(
    "--output",
    "-o",
    "out",
    type=click.Path(file_okay=False),
    help="Export folder (default RUN_DIR/export/<name>).",
)
@click.option("--quiet", is_flag=True, help="Only errors and the folder name.")
def command(source: str, target: str | None, fmt: str | None, firmware: bool, quant: str | None,
            calibration: str | None, method: str, out: str | None, quiet: bool) -> None:  # fmt: skip
    """Export SOURCE (a run folder, a .onnx file or an edgekd .pt) for a --target or a --format.

    \b
    edgekd export runs/demo --format onnx --quant int8
    edgekd export runs/demo --format tflite --quant fp32,int8
    edgekd export runs/demo --target arduino-nano-33-ble
    edgekd export model.onnx --target tflite-micro --calibration data.npz -o out/
    edgekd export runs/demo --target cortex-m4-qemu --firmware    (C backend + firmware)
    edgekd export model_int8.tflite --format c
    """
    from edgekd.export.api import export_model
    from edgekd.export.c_backend.export import export_c, wants_c_export

    if wants_c_export(source, target, fmt, firmware):
        kw = (
            {"quant": quant, "calibration": calibration, "method": method}
            if not source.endswith(".tflite")
            else {}
        )
        click.echo(
            str(export_c(source, target=target, fmt=fmt, out=out, firmware=firmware, quiet=quiet, **kw))
        )
        return

    folder = export_model(source, target=target, fmt=fmt, quant=quant, calibration=calibration, out=out,
                          method=method, quiet=quiet)  # fmt: skip
    click.echo(str(folder))
