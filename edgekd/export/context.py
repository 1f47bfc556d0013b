"""The state one export shares between its stages and conversion routes (instead of long parameter lists)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.console import is_terminal, plain_line
from edgekd.data.evalset import EvalSet
from edgekd.export.source import Source
from edgekd.safetext import markup, plain
from edgekd.targets import Target


class Log:
    """Timestamped progress lines on stderr, one per stage (silent when ``quiet``): styled by rich on a
    terminal, plain and flushed, never wrapped, anywhere else (a log file). Messages are plain text,
    escaped (:func:`edgekd.safetext.markup`): node and op names from the model file print as they are."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, quiet=quiet)
        self.quiet = quiet
        self.live = is_terminal(sys.stderr)
        self.t0 = time.perf_counter()

    def step(self, msg: str, style: str | None = None) -> None:
        stamp = f"{time.perf_counter() - self.t0:6.1f}s"
        if not self.live:
            self._plain(f"{stamp} {plain(msg)}")
            return
        text = markup(msg) if style is None else f"[{style}]{markup(msg)}[/]"
        self.console.print(f"[dim]{stamp}[/] {text}")

    def warn(self, msg: str) -> None:
        if not self.live:
            self._plain(f"warning: {plain(msg)}")
            return
        self.console.print(f"[yellow]warning:[/] {markup(msg)}")

    def _plain(self, line: str) -> None:
        if not self.quiet:
            plain_line(line, sys.stderr)


@dataclass
class ExportContext:
    """Everything an export stage reads or writes: inputs, the ONNX model, float reference, the record."""

    src: Source
    tgt: Target | None
    quants: list[str]
    work: Path
    stage: Path
    out_dir: Path
    record: dict[str, Any]
    log: Log
    eval: EvalSet
    calib: EvalSet | None = None
    tflm_samples: int = 1000
    route: str | None = None  # requested route (None: automatic order)
    ranges: str = "auto"  # int8 activation ranges (edgekd.export.ranges.METHODS)
    task: str = "classification"
    onnx_path: Path | None = None
    onnx_model: Any = None
    input_name: str = "input"
    ref: np.ndarray | None = None
    ref_name: str = ""
    channels_last: bool = False  # the TFLite input layout (onnx2tf moves channels last)
    logs: dict[str, Path] = field(default_factory=dict)  # route -> its full converter log

    @property
    def checks(self) -> dict[str, Any]:
        return self.record["checks"]

    @property
    def is_mcu(self) -> bool:
        return self.tgt is not None and self.tgt.is_mcu

    @property
    def target_name(self) -> str:
        return self.tgt.name if self.tgt is not None else "TFLite"

    @property
    def calib_x(self) -> np.ndarray | None:
        return None if self.calib is None else self.calib.x
