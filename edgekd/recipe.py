"""The typed recipe: YAML -> dataclasses with defaults, type checks and errors that name the key.

``--set train.lr=0.01`` style overrides are applied before validation (values parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgekd.codetrust import is_code_reference, is_trusted
from edgekd.errors import EdgekdError
from edgekd.names import check_safe_name
from edgekd.yamlio import read_yaml_file, safe_load


@dataclass
class FewShotConfig:
    size: int = 0  # total examples (or per class, see per_class)
    per_class: bool = False
    seed: int = 0


@dataclass
class DataConfig:
    name: str = "digits"
    val_fraction: float = 0.1
    test_fraction: float = 0.2  # only for data sets without a test split
    # seed of the validation / test split; none: the recipe's seed. Fix it when comparing seeds of one
    # recipe against one teacher, so no seed's test examples were in the teacher's training split.
    split_seed: int | None = None
    train_fraction: float = 1.0
    exclude_classes: list[int] = field(default_factory=list)
    jitter: int = 0  # random translation in pixels (Hinton used +-2); shorthand for augment translate
    # training-time transforms, in order: [{name: crop, params: {padding: 2}}, ...] (edgekd.data.augment)
    augment: list[Any] = field(default_factory=list)
    few_shot: FewShotConfig | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    name: str = "cnn"
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Start from these weights (a run folder or edgekd checkpoint of the same model and kwargs), e.g. a
    # QAT fine-tune of a trained student; "": the seeded initialisation.
    init: str = ""


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "cosine"  # constant | cosine | step | multistep
    step_size: int = 10
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: int = 0
    grad_clip: float = 0.0
    max_norm: float = 0.0  # Hinton-style max-norm constraint on incoming weights of Linear layers
    threads: int = 0  # 0: torch default
    device: str = "auto"  # auto (a GPU when there is one) | cpu | cuda | mps
    amp: str = "off"  # mixed precision on GPUs: off | bf16 | fp16
    # A step loss above divergence_factor x the mean of the run's first 10 step losses is treated like NaN
    # (the run stops and keeps the last good epoch); 0 turns the rule off.
    divergence_factor: float = 1e4
    eval_test_each_epoch: bool = False
    # The frozen teacher's outputs on the training set, computed once and reused when its inputs do not
    # change (see edgekd.distill.cache); stored in cache_dir ("": <runs dir>/.teacher-cache).
    cache_teacher: bool = True
    # With data.augment: 0 runs the teacher on every augmented view the student sees; K > 0 stores the
    # teacher's outputs for K views of every training example once (fp16) and each epoch the student draws
    # one of those K views (FKD, Shen & Xing 2022).
    teacher_views: int = 0
    cache_dir: str = ""
    channels_last: bool = True  # image batches and conv networks in channels-last memory format
    # Quantization-aware training (edgekd.distill.qat): the student trains with TFLite's int8 arithmetic
    # simulated; its learned activation ranges go into the int8 export. Only the last stage may set it.
    qat: bool = False
    qat_range_epochs: int = 0  # epochs that observe the activation ranges (0: the first half), then fixed


@dataclass
class TeacherConfig:
    path: str | None = None  # run folder or checkpoint; if empty, `edgekd run` trains one
    paths: list[str] = field(default_factory=list)  # several teachers: an ensemble (see `combine`)
    combine: str = "mean-logits"  # how an ensemble's outputs are combined: mean-logits | mean-probs
    input: str = "x"  # what the teacher reads: x, or the name of a privileged input of the data set
    model: ModelConfig | None = None
    train: dict[str, Any] = field(default_factory=dict)  # overrides of `train` for the teacher


@dataclass
class LossConfig:
    """One loss of a composition: ``{name: hint, weight: 1, student: features.2, teacher: layer2}``."""

    name: str = "ce"
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)
    student: str | None = None  # module path in the student (feature losses)
    teacher: str | None = None  # module path in the teacher
    adapter: str = "auto"  # auto | conv1x1 | linear | none (when the shapes differ)


@dataclass
class StageConfig:
    """A training stage: its own epochs, optimizer/schedule (``train`` overrides), losses and which
    student parameters train (a module-path prefix, or all). Stage k starts from stage k-1's weights."""

    name: str = ""
    epochs: int = 1
    train: dict[str, Any] = field(default_factory=dict)
    losses: list[LossConfig] = field(default_factory=list)  # empty: the recipe's method / losses
    trainable: str | None = None


@dataclass
class SchemeConfig:
    """How networks are combined above the training loop (``edgekd methods`` lists them)."""

    name: str = "single"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodConfig:
    name: str = "supervised"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    tune_bias_for_classes: list[int] = field(default_factory=list)  # Hinton's omitted-class correction


@dataclass
class ExportConfig:
    targets: list[str] = field(default_factory=lambda: ["tflite-micro"])
    calibration: str | None = None


@dataclass
class ProfileConfig:
    runs: int = 50
    threads: int = 1
    targets: list[str] = field(default_factory=list)


@dataclass
class Recipe:
    name: str = "run"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig | None = None
    method: MethodConfig = field(default_factory=MethodConfig)
    losses: list[LossConfig] = field(default_factory=list)  # a composition (method `compose`)
    stages: list[StageConfig] = field(default_factory=list)
    scheme: SchemeConfig = field(default_factory=SchemeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    baseline: bool = False  # `edgekd run`: also train the student on labels alone, for comparison
    export: ExportConfig = field(default_factory=ExportConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; returns the converted value or raises EdgekdError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, source)
            except EdgekdError as e:
                errors.append(str(e))
        raise EdgekdError(errors[0] if errors else f"{source}: key {key!r} has a bad value")
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise EdgekdError(f"{source}: key {key!r} must be a mapping, got {type(value).__name__}")
        return _build(tp, value, key, source)
    if origin is list:
        if not isinstance(value, list):
            raise EdgekdError(f"{source}: key {key!r} must be a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise EdgekdError(f"{source}: key {key!r} must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    if tp is bool and not isinstance(value, bool):
        raise EdgekdError(f"{source}: key {key!r} must be true or false, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise EdgekdError(f"{source}: key {key!r} must be an integer, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise EdgekdError(
            f"{source}: key {key!r} must be {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )
    return value


def _build(cls: type, data: dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise EdgekdError(f"{source}: unknown key {where!r}; valid keys here: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key, source)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.01"`` -> (["train", "lr"], 0.01); the value is parsed as YAML."""
    if "=" not in text:
        raise EdgekdError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.lr=0.01")
    key, _, raw = text.partition("=")
    try:
        value = safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise EdgekdError(f"--set {text!r}: {part!r} is not a mapping")
            node = nxt
        node[path[-1]] = value
    return data


def recipe_from_dict(data: dict[str, Any], source: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise EdgekdError(f"{source}: a recipe must be a YAML mapping at top level")
    recipe = _build(Recipe, data, "", source)
    validate(recipe, source)
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load, override, validate. Errors name the file and the key."""
    path = Path(path)
    data = read_yaml_file(path, "recipe")
    if data is None:
        raise EdgekdError(f"{path}: the recipe is empty; see examples/ for one to start from")
    if not isinstance(data, dict):
        raise EdgekdError(f"{path}: a recipe must be a YAML mapping at top level")
    data = apply_overrides(data, overrides or [])
    recipe = recipe_from_dict(data, str(path))
    check_recipe_code(data, overrides or [], str(path))
    return recipe


# Parts of a recipe whose ``name`` keys are built with ``build_model`` (student, peers, the teacher trained
# by `edgekd run`, members of an ``ensemble`` model in their kwargs).
MODEL_SECTIONS = ("model", "teacher")


def _code_references(node: Any, path: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """(key path, spec) of every model spec ``{name: package.module:attr, kwargs}`` under ``node``."""
    found = []
    if isinstance(node, dict):
        if is_code_reference(node.get("name")):
            found.append((path, node))
        for k, v in node.items():
            found += _code_references(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _code_references(v, (*path, i))
    return found


def _dotted(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


# Loaders whose kwargs choose the code they run: typing the name alone does not trust a file's choice.
CODE_CHOOSING_KWARGS = {"torch.hub": ("repo_or_dir",)}


def check_recipe_code(data: dict[str, Any], overrides: list[str], source: str) -> None:
    """Refuse a model name from the recipe *file* that would import code (``module:Class``,
    ``torch.hub:load``), unless the user typed it (``--set``) or passed ``--trust-model-code``."""
    typed = [tuple(parse_override(o)[0]) for o in overrides]
    for section in MODEL_SECTIONS:
        for path, spec in _code_references(data.get(section), (section,)):
            name, kwargs = spec["name"], spec.get("kwargs") if isinstance(spec.get("kwargs"), dict) else {}
            module, _, attr = name.partition(":")
            chosen = [k for k in CODE_CHOOSING_KWARGS.get(module, ()) if k in kwargs]
            must_type = [(*path, "name"), *((*path, "kwargs", k) for k in chosen)]
            if is_trusted(name) or all(any(key[: len(t)] == t for t in typed) for key in must_type):
                continue
            runs = f" (which runs hubconf.py from {kwargs[chosen[0]]!r})" if chosen else ""
            raise EdgekdError(
                f"{source}: key {_dotted((*path, 'name'))!r} names {name!r}, not a registered edgekd model; "
                f"building it would import {module!r} and call its {attr!r}{runs}. A recipe is a file like a "
                "checkpoint: pass --trust-model-code only if you trust this recipe"
            )


def validate(r: Recipe, source: str) -> None:
    """Value checks that types alone cannot express."""
    checks = [
        (r.train.epochs >= 1, "train.epochs", "must be >= 1"),
        (r.train.batch_size >= 1, "train.batch_size", "must be >= 1"),
        (r.train.divergence_factor == 0 or r.train.divergence_factor > 1, "train.divergence_factor",
         "must be 0 (off) or > 1"),
        (math.isfinite(r.train.lr) and r.train.lr > 0, "train.lr", "must be a finite number > 0"),
        (r.train.optimizer in ("sgd", "adam", "adamw"), "train.optimizer", "must be sgd, adam or adamw"),
        (r.train.schedule in ("constant", "cosine", "step", "multistep"), "train.schedule",
         "must be constant, cosine, step or multistep"),
        (0 <= r.data.jitter <= 8, "data.jitter", "must be between 0 and 8 pixels"),
        (r.train.device in ("auto", "cpu", "cuda", "mps"), "train.device", "must be auto, cpu, cuda or mps"),
        (r.train.amp in ("off", "bf16", "fp16"), "train.amp", "must be off, bf16 or fp16"),
        (r.teacher is None or r.teacher.combine in ("mean-logits", "mean-probs"), "teacher.combine",
         "must be mean-logits or mean-probs"),
        (all(s.epochs >= 1 for s in r.stages), "stages[].epochs", "must be >= 1"),
        (r.teacher is None or not (r.teacher.path and r.teacher.paths), "teacher",
         "give either 'path' (one teacher) or 'paths' (an ensemble), not both"),
    ]  # fmt: skip
    for ok, key, what in checks:
        if not ok:
            raise EdgekdError(f"{source}: key {key!r} {what}")
    check_seeds(r, source)
    check_optimizer_values(r.train, "train", source)
    for where, overrides in _train_overrides(r):
        merged = _build(TrainConfig, {**dataclasses.asdict(r.train), **overrides}, where, source)
        check_optimizer_values(merged, where, source)
    from edgekd.data import check_options  # numpy only (no torch); importing it registers the loaders

    check_options(r.data.name, r.data.options, source)
    if r.train.qat_range_epochs < 0:
        raise EdgekdError(
            f"{source}: key 'train.qat_range_epochs' must be >= 0 (0: the first half of the stage)"
        )
    if not 0 <= r.train.teacher_views <= 1024:
        raise EdgekdError(f"{source}: key 'train.teacher_views' must be between 0 and 1024")
    if r.data.augment:  # imports torch: only when there is something to check
        from edgekd.data.augment import parse_augment

        parse_augment(r.data.augment, r.data.name, None, f"{source}: key data.augment")
    if r.data.few_shot is not None and r.data.few_shot.size < 1:
        raise EdgekdError(f"{source}: key 'data.few_shot.size' must be >= 1")
    check_recipe_names(r, source)


MAX_SEED = 2**63 - 1


def check_seeds(r: Recipe, source: str) -> None:
    """Seeds are integers in [0, 2**63): torch and numpy refuse negative ones (after the run folder exists)."""
    seeds = [("seed", r.seed), ("data.split_seed", r.data.split_seed)]
    if r.data.few_shot is not None:
        seeds.append(("data.few_shot.seed", r.data.few_shot.seed))
    for key, value in seeds:
        if value is not None and not 0 <= value <= MAX_SEED:
            raise EdgekdError(f"{source}: key {key!r} must be an integer in [0, 2**63), got {value}")


def _train_overrides(r: Recipe) -> list[tuple[str, dict[str, Any]]]:
    """(key, dict) of every place that overrides ``train`` for part of the run: stages, the teacher."""
    out = [(f"stages[{i}].train", s.train) for i, s in enumerate(r.stages) if s.train]
    if r.teacher is not None and r.teacher.train:
        out.append(("teacher.train", r.teacher.train))
    return out


def check_optimizer_values(t: TrainConfig, prefix: str, source: str) -> None:
    """The optimizer values torch would refuse only once training starts: ``momentum`` in [0, 1),
    ``weight_decay`` >= 0, both finite."""
    if not (math.isfinite(t.momentum) and 0 <= t.momentum < 1):
        raise EdgekdError(f"{source}: key '{prefix}.momentum' must be in [0, 1) (e.g. 0.9), got {t.momentum}")
    if not (math.isfinite(t.weight_decay) and t.weight_decay >= 0):
        raise EdgekdError(
            f"{source}: key '{prefix}.weight_decay' must be a finite number >= 0 (e.g. 5e-4), got {t.weight_decay}"
        )


def check_recipe_names(r: Recipe, source: str) -> None:
    """Every recipe name that becomes a path is a safe name (:mod:`edgekd.names`): the run folder, stage
    names, SMD machine names (``<data dir>/train/<machine>.txt``)."""
    check_safe_name(r.name, source, "key 'name'")
    for i, s in enumerate(r.stages):
        if s.name:  # empty: the default stage<k>
            check_safe_name(s.name, source, f"key 'stages[{i}].name'")
    machines = r.data.options.get("machines") if r.data.name == "smd" else None
    if machines is not None and machines != "all":
        for i, m in enumerate(machines if isinstance(machines, list) else [machines]):
            check_safe_name(m, source, f"key 'data.options.machines[{i}]'")


def augment_specs(r: Recipe, task: str | None = None) -> list:
    """The run's transforms: ``data.jitter`` (a translation, first) and then ``data.augment``."""
    from edgekd.data.augment import AugmentSpec, parse_augment

    specs = parse_augment(r.data.augment, r.data.name, task) if r.data.augment else []
    if r.data.jitter:
        specs.insert(0, AugmentSpec("translate", {"max_shift": r.data.jitter}))
    return specs


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)


# ------------------------------------------------------------------------------------------------
# What may change when a run is resumed: everything else must equal the recorded recipe, because the
# seed, data split, model and optimisation define what the checkpoint is the middle of.
RESUME_MAY_CHANGE: tuple[str, ...] = (
    "train.epochs",
    "train.threads",
    "train.eval_test_each_epoch",
    "train.cache_teacher",
    "train.cache_dir",
    "train.channels_last",
    "export",
    "profile",
    "baseline",
)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def resume_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys (dotted) whose values differ between two recipe dicts, except those resume may change."""
    a, b = _flatten(recorded), _flatten(current)
    # keys a newer edgekd added: absent from the recorded recipe means the default, which older runs used
    defaults = _flatten(Recipe().to_dict())
    a.update({k: defaults[k] for k in b if k not in a and k in defaults})
    keys = sorted(set(a) | set(b))

    def allowed(key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in RESUME_MAY_CHANGE)

    return [k for k in keys if not allowed(k) and a.get(k, _MISSING) != b.get(k, _MISSING)]


_MISSING = object()
