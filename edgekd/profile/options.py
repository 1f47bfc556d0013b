"""``ProfileOptions``: how to profile, built once by the CLI (``edgekd profile``) or from a recipe
(``edgekd run``) and passed whole to :func:`~edgekd.profile.api.profile_run`,
:func:`~edgekd.profile.api.profile_files` and :func:`~edgekd.profile.api.profile_networks`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError

RSS_MODES = ("off", "subprocess", "inprocess")


@dataclass(frozen=True)
class ProfileOptions:
    """Settings of one profile.

    ``targets``: names for the fit table and MCU estimates (``None`` = every target); ``runs`` /
    ``warmup``: timed / untimed batch-1 inferences per row; ``samples``: a seeded subset of the test
    data; ``runtimes``: only these runtimes (``None`` = every one that applies); ``rss``: ``"off"``,
    ``"subprocess"`` (a fresh process per row: slower, includes the runtime's libraries) or
    ``"inprocess"`` (VmHWM reset around load + one inference); ``json_path`` / ``md_path`` /
    ``html_path``: where the reports go (a run folder's defaults when ``None``); ``layers``: add the
    per-layer float-vs-int8 diff of every export folder (:mod:`edgekd.profile.layers`).
    """

    targets: tuple[str, ...] | None = None
    runs: int = 50
    warmup: int = 10
    threads: int = 1
    samples: int | None = None
    runtimes: tuple[str, ...] | None = None
    rss: str = "off"
    json_path: Path | None = None
    md_path: Path | None = None
    html_path: Path | None = None
    layers: bool = False

    def __post_init__(self) -> None:
        if self.rss not in RSS_MODES:
            raise EdgekdError(f"rss={self.rss!r}: use 'off', 'subprocess' or 'inprocess'")
        # lists from a CLI or recipe become tuples: the options stay immutable and hashable
        for name in ("targets", "runtimes"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else tuple(value))
        for name in ("json_path", "md_path", "html_path"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else Path(value))

    def check_runtimes(self) -> None:
        """EdgekdError naming the first requested runtime that edgekd does not know."""
        from edgekd.runtimes import RUNTIMES

        for r in self.runtimes or ():
            if r not in RUNTIMES:
                raise EdgekdError(f"--runtime {r}: unknown runtime; valid: {', '.join(sorted(RUNTIMES))}")

    @classmethod
    def from_recipe(cls, recipe: Any) -> ProfileOptions:
        """A recipe's ``profile:`` section; its targets default to the export targets."""
        targets = recipe.profile.targets or list(recipe.export.targets)
        return cls(targets=targets, runs=recipe.profile.runs, threads=recipe.profile.threads)

    def settings(self, samples: int | None) -> dict[str, Any]:
        """The report's ``settings`` record (``samples``: the number of test samples used)."""
        return {"runs": int(self.runs), "warmup": int(self.warmup), "threads": int(self.threads), "batch": 1,
                "runtimes": None if self.runtimes is None else list(self.runtimes), "rss": self.rss,
                "samples": samples}  # fmt: skip

    def with_outputs(self, stem: Path) -> ProfileOptions:
        """These options with every report path not given set to ``stem.{json,md,html}``."""
        from dataclasses import replace

        return replace(self, json_path=self.json_path or stem.with_suffix(".json"),
                       md_path=self.md_path or stem.with_suffix(".md"),
                       html_path=self.html_path or stem.with_suffix(".html"))  # fmt: skip
