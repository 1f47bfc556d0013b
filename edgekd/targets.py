"""Deployment targets: one YAML profile per board or device class (``targets/<name>.yaml``).

Profiles are searched in ``$EDGEKD_TARGETS_DIR`` (if set), then the repository's ``targets/`` folder
(next to the package, in a source checkout), then the copy shipped inside the installed package
(``edgekd/_data/targets``, a link to ``targets/`` in the source tree), then ``./targets``. A path to a ``.yaml`` file is loaded directly.

Keys (all required unless marked optional)::

    name: arduino-nano-33-ble
    kind: mcu                      # mcu | mobile | host
    description: ...               # optional
    cpu: Cortex-M4F
    clock_mhz: 64                  # null when unknown
    ram_kb: 256                    # null = no limit
    flash_kb: 1024                 # null = no limit
    runtime: tflite-micro          # tflite-micro | litert | onnxruntime, or a list of them
    quantization: int8             # fp32 | fp16 | dynamic | int8 (what the target needs)
    cycles_per_mac: 2.0            # optional, used for latency estimates
    cycles_per_mac_source: "..."   # optional, where the figure comes from
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.names import check_safe_name

KINDS = ("mcu", "mobile", "host")
RUNTIMES = ("tflite-micro", "litert", "onnxruntime")
QUANTS = ("fp32", "fp16", "dynamic", "int8")
REQUIRED = ("name", "kind", "cpu", "clock_mhz", "ram_kb", "flash_kb", "runtime", "quantization")
OPTIONAL = ("description", "cycles_per_mac", "cycles_per_mac_source", "notes")


@dataclass(frozen=True)
class Target:
    """A deployment target profile."""

    name: str
    kind: str
    cpu: str
    clock_mhz: float | None
    ram_bytes: int | None
    flash_bytes: int | None
    runtimes: tuple[str, ...]
    quantization: str
    description: str = ""
    cycles_per_mac: float | None = None
    cycles_per_mac_source: str = ""
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_mcu(self) -> bool:
        """True when the target runs TensorFlow Lite Micro (needs full-integer int8 and C artifacts)."""
        return self.kind == "mcu" or "tflite-micro" in self.runtimes

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "cpu": self.cpu,
            "clock_mhz": self.clock_mhz,
            "ram_bytes": self.ram_bytes,
            "flash_bytes": self.flash_bytes,
            "runtime": list(self.runtimes),
            "quantization": self.quantization,
            "cycles_per_mac": self.cycles_per_mac,
            "cycles_per_mac_source": self.cycles_per_mac_source,
            "path": str(self.path) if self.path else None,
        }


def target_dirs() -> list[Path]:
    """Folders searched for ``<name>.yaml``, in order."""
    dirs: list[Path] = []
    env = os.environ.get("EDGEKD_TARGETS_DIR")
    if env:
        dirs += [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parent.parent / "targets")  # a source checkout
    dirs.append(Path(__file__).parent / "_data" / "targets")  # shipped inside the installed package
    dirs.append(Path.cwd() / "targets")
    seen: list[Path] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def _num(path: Path, key: str, v: Any, *, allow_none: bool = True) -> float | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise EdgekdError(f"{path}: key {key!r} must be a non-negative number or null, not {v!r}")
    return float(v)


def parse_target(data: Any, path: Path) -> Target:
    """Validate a loaded YAML mapping and build a :class:`Target` (one-line errors naming the key)."""
    if not isinstance(data, dict):
        raise EdgekdError(f"{path}: a target profile must be a YAML mapping with keys {', '.join(REQUIRED)}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise EdgekdError(f"{path}: missing key(s) {', '.join(missing)}")
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise EdgekdError(
            f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(REQUIRED + OPTIONAL)}"
        )
    name = check_safe_name(data["name"], str(path), "key 'name'")  # becomes RUN/export/<name>/
    if data["kind"] not in KINDS:
        raise EdgekdError(f"{path}: key 'kind' is {data['kind']!r}; valid: {', '.join(KINDS)}")
    runtimes = data["runtime"] if isinstance(data["runtime"], list) else [data["runtime"]]
    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad or not runtimes:
        raise EdgekdError(f"{path}: key 'runtime' has {bad or runtimes!r}; valid: {', '.join(RUNTIMES)}")
    if data["quantization"] not in QUANTS:
        raise EdgekdError(
            f"{path}: key 'quantization' is {data['quantization']!r}; valid: {', '.join(QUANTS)}"
        )
    if data["kind"] == "mcu" and data["quantization"] != "int8":
        raise EdgekdError(
            f"{path}: key 'quantization' must be int8 for kind mcu (TFLite Micro runs full-integer models)"
        )
    ram = _num(path, "ram_kb", data["ram_kb"])
    flash = _num(path, "flash_kb", data["flash_kb"])
    cpm = _num(path, "cycles_per_mac", data.get("cycles_per_mac"))
    return Target(
        name=name,
        kind=data["kind"],
        cpu=str(data["cpu"]),
        clock_mhz=_num(path, "clock_mhz", data["clock_mhz"]),
        ram_bytes=None if ram is None else int(ram * 1024),
        flash_bytes=None if flash is None else int(flash * 1024),
        runtimes=tuple(runtimes),
        quantization=data["quantization"],
        description=str(data.get("description") or ""),
        cycles_per_mac=cpm,
        cycles_per_mac_source=str(data.get("cycles_per_mac_source") or ""),
        path=path,
        extra={k: data[k] for k in ("notes",) if k in data},
    )


def _read_yaml(path: Path) -> Any:
    from edgekd.yamlio import read_yaml_file

    return read_yaml_file(path, "target profile")


def load_target(name_or_path: str | os.PathLike) -> Target:
    """Load a target by profile name (searched in :func:`target_dirs`) or from a YAML file path."""
    s = str(name_or_path)
    p = Path(s).expanduser()
    if s.endswith((".yaml", ".yml")) or os.sep in s or p.is_file():
        if not p.is_file():
            raise EdgekdError(f"{p}: target profile not found")
        return parse_target(_read_yaml(p), p)
    for d in target_dirs():
        for ext in (".yaml", ".yml"):
            f = d / f"{s}{ext}"
            if f.is_file():
                return parse_target(_read_yaml(f), f)
    names = [t.name for t in list_targets(strict=False)]
    raise EdgekdError(
        f"unknown target {s!r}; available: {', '.join(names) or 'none'} (or pass a path to a board .yaml)"
    )


def list_targets(strict: bool = True) -> list[Target]:
    """All profiles found in :func:`target_dirs` (first one wins on a name clash), sorted by kind and name."""
    found: dict[str, Target] = {}
    for d in target_dirs():
        if not d.is_dir():
            continue
        for f in sorted([*d.glob("*.yaml"), *d.glob("*.yml")]):
            try:
                t = parse_target(_read_yaml(f), f)
            except EdgekdError:
                if strict:
                    raise
                continue
            found.setdefault(t.name, t)
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(found.values(), key=lambda t: (order[t.kind], t.name))


FIT_RULE = (
    "RAM = the TFLite Micro arena total measured by the host interpreter (it holds the input and output "
    "tensors, which the application fills in place, so no extra I/O buffers are counted); flash = the "
    "model flatbuffer bytes (runtime code not counted). Checked for microcontroller targets only."
)
NON_MCU_FIT = (
    "not checked: this target runs {runtime}, whose memory is the host process (see the report's RSS), "
    "not a TFLite Micro arena"
)


def fit_check(target: Target | dict[str, Any], model_bytes: int, arena_total: int | None) -> dict[str, Any]:
    """The one fit rule (:data:`FIT_RULE`) for a full-integer model on ``target``.

    Returns ``{"target", "fits", "rule", "rows": [{resource, needed, available, ok, detail}]}``; ``fits``
    is None (with a ``note``) for targets that do not run TFLite Micro, or when the arena is unknown.
    """
    t = target.as_dict() if isinstance(target, Target) else dict(target)
    runtimes = t.get("runtime") or t.get("runtimes") or []
    runtimes = [runtimes] if isinstance(runtimes, str) else list(runtimes)
    is_mcu = t.get("kind") == "mcu" or "tflite-micro" in runtimes
    out: dict[str, Any] = {"target": t["name"], "rule": FIT_RULE, "rows": []}
    if not is_mcu:
        out.update(fits=None, note=NON_MCU_FIT.format(runtime=", ".join(runtimes) or "a host runtime"))
        return out
    rows = [
        {"resource": "RAM", "needed": arena_total, "available": t.get("ram_bytes"),
         "detail": "TFLite Micro arena total (inputs and outputs included)"},
        {"resource": "flash", "needed": int(model_bytes), "available": t.get("flash_bytes"),
         "detail": "model flatbuffer (runtime code not counted)"},
    ]  # fmt: skip
    for r in rows:
        r["ok"] = None if r["needed"] is None else (r["available"] is None or r["needed"] <= r["available"])
    oks = [r["ok"] for r in rows]
    out["fits"] = None if None in oks else all(oks)
    out["rows"] = rows
    return out
