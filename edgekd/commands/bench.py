"""``edgekd bench``: measure a model on a device over the MLPerf Tiny / EEMBC serial protocol."""

from __future__ import annotations

import click

from edgekd.commands._common import wire_options
from edgekd.harness.tflm_firmware import RUNTIMES


@click.command("bench")
@click.argument("source", type=click.Path())
@click.option(
    "--target", "-t", required=True, help="Target profile name (e.g. cortex-m4-qemu, nucleo-l4r5zi)."
)
@click.option("--port", "-p", help="Serial device (/dev/ttyACM0) or pyserial URL (socket://127.0.0.1:5555).")
@click.option(
    "--emulate", is_flag=True, help="Build the C-backend firmware and run it on QEMU (cortex-m4-qemu)."
)
@click.option("--software", is_flag=True, help="Use edgekd's software device (host TFLite Micro on a pty).")
@click.option(
    "--mode", type=click.Choice(["accuracy", "performance", "all"]), default="all", show_default=True
)
@click.option(
    "--samples", default=50, show_default=True, type=click.IntRange(1), help="Accuracy-mode samples."
)
@click.option(
    "--data", help="Test data (data set name, data.json or .npz); default: the run folder's data.json."
)
@click.option("--windows", default=5, show_default=True, type=click.IntRange(1), help="Performance windows.")
@click.option("--window-s", default=0.5, show_default=True, type=click.FloatRange(0.001),
              help="Device seconds per performance window.")  # fmt: skip
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds to wait for an answer (inference: --infer-timeout).")  # fmt: skip
@click.option("--infer-timeout", default=120.0, show_default=True, type=click.FloatRange(0.1))
@click.option("--baud", default=115200, show_default=True, type=click.IntRange(1), help="Serial baud rate.")
@wire_options
@click.option("--preload/--no-preload", default=True, show_default=True,
              help="--emulate: accuracy samples in the firmware image, or sent as db lines over the UART.")  # fmt: skip
@click.option("--runtime", type=click.Choice(RUNTIMES), default="c", show_default=True,
              help="--emulate: the model runtime in the firmware: edgekd's C backend, TFLite Micro with CMSIS-NN "
              "kernels (tflm) or with its reference kernels (tflm-reference).")  # fmt: skip
@click.option("--kernels", type=click.Choice(["portable", "fast"]), default="fast", show_default=True,
              help="--emulate --runtime c: the C backend's kernels (Cortex-M4 SIMD, or plain C loops).")  # fmt: skip
@click.option("--tflm-tree", type=click.Path(file_okay=False),
              help="The TFLite Micro source tree for --runtime tflm* (create_tflm_tree.py output; default: "
              "$EDGEKD_TFLM_DIR or ../shared/third_party/tflite-micro/tflm_tree_{cmsisnn,ref}).")  # fmt: skip
@click.option("--output", "-o", type=click.Path(file_okay=False), help="Folder for bench.json.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def command(source: str, target: str, port: str | None, emulate: bool, software: bool, mode: str, samples: int,
            data: str | None, windows: int, window_s: float, timeout: float, infer_timeout: float,
            baud: int, mlperf_model: str | None, input_format: str | None, results: str | None,
            preload: bool, runtime: str, kernels: str, tflm_tree: str | None, output: str | None,
            quiet: bool) -> None:  # fmt: skip
    """Benchmark SOURCE (a run folder or an int8 .tflite) on an MLPerf Tiny device: accuracy (top-1 and
    results vs the host TFLite Micro) and performance (median inferences/s). Writes bench/<target>/bench.json.

    \b
    edgekd bench runs/demo --target nucleo-l4r5zi --port /dev/ttyACM0
    edgekd bench runs/demo --target cortex-m4-qemu --emulate
    edgekd bench runs/demo --target cortex-m4-qemu --emulate --runtime tflm
    edgekd bench model.tflite --target tflite-micro --software
    """
    from edgekd.errors import set_interrupt_message

    set_interrupt_message(
        "benchmark cancelled; an emulator is always stopped and bench.json is only written complete"
    )
    from edgekd.commands._common import run_folder_locked
    from edgekd.harness.bench import BenchOptions, run_bench, summary_lines

    options = BenchOptions(target=target, port=port, emulate=emulate, software=software, mode=mode, samples=samples,
                           data=data, windows=windows, window_s=window_s, timeout=timeout,
                           infer_timeout=infer_timeout, output=output, quiet=quiet, baudrate=baud,
                           mlperf_model=mlperf_model, input_format=input_format, results=results,
                           preload=preload, runtime=runtime, kernels=kernels, tflm_tree=tflm_tree)  # fmt: skip
    with run_folder_locked(source):
        path, record = run_bench(source, options)
    from edgekd.safetext import plain

    for line in summary_lines(record):  # the device's name is the device's text
        click.echo(plain(line), err=True)
    click.echo(str(path))
