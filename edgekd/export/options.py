"""What one export makes: :class:`ExportOptions`, built once (by the CLI, the recipe or a caller of
:func:`edgekd.export.export_run`) and handed down whole instead of re-passed keyword by keyword."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TFLM_MAX_SAMPLES = 1000

# (model file, export folder being built, target name) -> firmware.json. The command layer passes
# edgekd.harness.firmware_project.write_firmware: export sits below the harness and never imports it.
FirmwareWriter = Callable[[Path, Path, str], dict[str, Any]]


@dataclass(frozen=True)
class ExportOptions:
    """The settings of one export (see :func:`edgekd.export.export_run` for what each does).

    Exactly one of ``target`` / ``fmt``; ``quant`` a name, comma list, list or ``"all"``;
    ``calibration`` a recipe ``.yaml`` or ``.npz``; ``eval_data`` an ``.npz``; ``route``
    ``onnx2tf | litert-torch``; ``input_shape`` for a ``torch.nn.Module`` source; ``out`` the folder;
    ``method`` the ONNX int8 calibration; ``max_eval`` / ``tflm_samples`` cap the evaluation samples;
    ``firmware`` writes benchmark firmware projects (C backend); ``ranges`` the int8 activation ranges
    (``auto`` | ``minmax`` | ``percentile`` | ``mse`` | ``learned``, see :mod:`edgekd.export.ranges`; ``None``: the
    calibration recipe's, else ``auto``).
    """

    target: str | Path | None = None
    fmt: str | None = None
    quant: str | list[str] | None = None
    calibration: str | Path | None = None
    eval_data: str | Path | None = None
    route: str | None = None
    input_shape: tuple[int, ...] | None = None
    out: str | Path | None = None
    method: str = "minmax"
    max_eval: int | None = None
    tflm_samples: int = TFLM_MAX_SAMPLES
    quiet: bool = True
    firmware: FirmwareWriter | None = None
    ranges: str | None = None

    @classmethod
    def of(cls, options: ExportOptions | None = None, **changes: Any) -> ExportOptions:
        """``options`` (default: the defaults) with ``changes``; an unknown name is a TypeError."""
        return dataclasses.replace(options or cls(), **changes)

    @classmethod
    def for_recipe(cls, export: Any, target: str) -> ExportOptions:
        """The export a recipe's ``export:`` section asks for on ``target``."""
        return cls(target=target, calibration=export.calibration)
