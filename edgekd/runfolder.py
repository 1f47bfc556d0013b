"""The run folder: the one place that defines where every stage reads and writes.

runs/<name>/
  recipe.yaml       resolved recipe (defaults filled, overrides applied)
  seeds.json        seeds used
  data.json         data set, splits, normalisation statistics
  model.pt          a model trained on labels (``edgekd train``)
  student.pt        a distilled student (``edgekd distill``)
  teacher.pt        copy of the teacher used (optional)
  checkpoint.pt     last complete epoch (resume)
  metrics.json      per-epoch metrics and final test metrics
  curves.png        training curves
  export/<target>/  one folder per export target or format
  report.{json,md,html}, plots/
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.names import child_path


@dataclass(frozen=True)
class RunFolder:
    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    # --- files -------------------------------------------------------------------------------
    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def seeds(self) -> Path:
        return self.root / "seeds.json"

    @property
    def data_info(self) -> Path:
        return self.root / "data.json"

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    @property
    def student(self) -> Path:
        return self.root / "student.pt"

    @property
    def teacher(self) -> Path:
        return self.root / "teacher.pt"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    @property
    def export_root(self) -> Path:
        return self.root / "export"

    def export_dir(self, target: str) -> Path:
        """``export/<target>``; ``target`` (a target or format name) must be a safe name."""
        return child_path(self.export_root, target, str(self.export_root), "target name")

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def report(self, ext: str) -> Path:
        return self.root / f"report.{ext}"

    # --- helpers -----------------------------------------------------------------------------
    def ensure(self) -> RunFolder:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def trained_model(self) -> Path:
        """The run's main model: the distilled student if present, else the label-trained model."""
        for p in (self.student, self.model):
            if p.exists():
                return p
        raise EdgekdError(
            f"{self.root}: no student.pt or model.pt in this run folder; run `edgekd train` or `edgekd distill` first"
        )

    def read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise EdgekdError(f"{path}: missing; was the previous stage run on {self.root}?") from None
        except json.JSONDecodeError as e:
            raise EdgekdError(f"{path}: not valid JSON ({e}); delete it and re-run the stage") from None
