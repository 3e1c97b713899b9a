"""Resolved training configuration: defaults < recipe TOML < command-line options < --set.

The config is a nested dict with three parts: top-level training keys (``TrainConfig``),
``params`` (the method's own hyper-parameters, from its ``Params`` dataclass) and ``aug``
(``AugConfig``). Every key has a default, so the resolved config written to the manifest
says exactly what ran. ``--set key=value`` takes TOML values (``lr=0.01``,
``aug.scale=[0.4, 1.0]``, ``params.tau=0.2``); a bare method parameter name (``tau=0.2``)
is accepted too when it is unambiguous.
"""
from __future__ import annotations

import dataclasses
import re
import tomllib
from typing import Any

from vssl_cli.data.augment import AugConfig
from vssl_cli.errors import UsageProblem, VsslError
from vssl_cli.safe_io import read_bytes


@dataclasses.dataclass
class TrainConfig:
    method: str = "simclr"
    backbone: str = "r3d18"
    epochs: int = 100
    max_steps: int = 0              # 0: epochs decide; else stop after this many steps
    batch_size: int = 32            # global, split over DDP processes
    optimizer: str = "adamw"        # sgd | adam | adamw
    lr: float = 1e-3
    momentum: float = 0.9           # SGD only
    weight_decay: float = 1e-4
    schedule: str = "cosine"        # cosine | step | constant
    step_milestones: tuple[float, ...] = (0.6, 0.8)   # fractions of training, for "step"
    step_gamma: float = 0.1
    warmup_epochs: float = 1.0
    clip_grad: float = 0.0          # max gradient norm, 0 = off
    split: str = "auto"             # train split when the store has splits, else all
    official_split: int | None = None   # UCF101/HMDB51 split 1-3 (None: extract's --split)
    seed: int = 0
    workers: int = -1               # DataLoader readers; -1: auto (engine/device.py)
    device: str = "auto"
    amp: str = "auto"               # auto (bf16/fp16 on CUDA) | bf16 | fp16 | off
    channels_last: bool = True      # CUDA only
    compile: bool = False
    tensorboard: bool = False       # also log the metrics to RUN/tensorboard/ (= log_to)
    log_to: tuple[str, ...] = ()    # trackers: tensorboard, mlflow, wandb (engine/trackers.py)
    sync_bn: bool = True            # DDP: BatchNorm over the global batch (CPU too)
    checkpoint_every: int = 500     # steps
    log_every: int = 10             # steps


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AMP_MODES = ("auto", "bf16", "fp16", "off")
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,3})?")


def _fields(cls) -> dict[str, Any]:
    return {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}


def default_config(params_cls) -> dict:
    return {**_fields(TrainConfig), "params": _fields(params_cls), "aug": _fields(AugConfig)}


def load_recipe(path: str) -> dict:
    try:
        return tomllib.loads(read_bytes(path, "recipe", 1 << 20).decode("utf-8"))
    except VsslError as e:
        raise UsageProblem(e.what, path) from None
    except UnicodeDecodeError as e:
        raise UsageProblem(f"recipe is not UTF-8 text (byte {e.start})", path) from None
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise UsageProblem(f"invalid recipe TOML: {e or 'nested too deeply'}", path) from None
    except OSError as e:
        raise UsageProblem(f"cannot read recipe: {e.strerror}", path) from None


def parse_set(items: tuple[str, ...] | list[str]) -> list[tuple[str, Any]]:
    """``key=value`` pairs; values are TOML (numbers, booleans, arrays, quoted strings),
    anything else is taken as a plain string."""
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageProblem(f"--set expects key=value, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out.append((key.strip(), value))
    return out


def _coerce(value: Any, default: Any, key: str, source: str) -> Any:
    """Check a value against its default's type; tuples come from TOML arrays."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, tuple):
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, default[0], key, source) if default else v for v in value)
    elif default is None or isinstance(default, str):
        return value
    raise UsageProblem(f"{key}: expected {type(default).__name__}, got {value!r}", source)


def apply_overrides(config: dict, items, source: str) -> None:
    """Set dotted keys in place; unknown keys are an error naming where they came from."""
    for key, value in items:
        section, _, name = key.rpartition(".")
        target = config
        if section:
            if section not in ("params", "aug"):
                raise UsageProblem(f"unknown config section {section!r} in {key!r}", source)
            target = config[section]
        elif key not in config and key in config["params"] and key not in config["aug"]:
            target = config["params"]
        if name not in target or isinstance(target[name], dict):
            known = ", ".join(sorted(k for k in target if not isinstance(target[k], dict)))
            raise UsageProblem(f"unknown config key {key!r} (known: {known})", source)
        target[name] = _coerce(value, target[name], key, source)


def flatten_recipe(recipe: dict) -> list[tuple[str, Any]]:
    items = []
    for key, value in recipe.items():
        if isinstance(value, dict):
            items += [(f"{key}.{k}", v) for k, v in value.items()]
        else:
            items.append((key, value))
    return items


# Where every number of a config may lie: (key, low, high), "section.key" or a bare key
# that applies in any section, "*" a wildcard. Values out of range fail as a usage error
# when the config is resolved, not as a crash after the data is loaded. Every number must
# be finite, and numbers no rule names must lie within +-GENERIC.
RANGES = [
    ("epochs", 0, 1e6), ("max_steps", 0, 1e9), ("batch_size", 2, 1e6), ("lr", 1e-12, 100),
    ("momentum", 0, 1), ("weight_decay", 0, 100), ("warmup_epochs", 0, 1e6),
    ("clip_grad", 0, 1e12), ("seed", 0, 2**32 - 1), ("official_split", 1, 3), ("workers", -1, 1024),
    ("checkpoint_every", 1, 1e12), ("log_every", 1, 1e12), ("step_gamma", 1e-12, 1),
    ("step_milestones", 0, 1),
    ("params.clip_len", 1, 4096), ("params.long_len", 1, 4096), ("params.global_len", 1, 4096),
    ("params.stride", 1, 1024), ("params.n_local", 1, 256), ("params.tau", 1e-6, 100),
    ("params.proj_dim", 1, 65536), ("params.proj_hidden", 0, 65536),
    ("params.negatives", 1, 1e8), ("params.window", 0, 4096), ("params.num_classes", 0, 1e6),
    ("params.step_frames", 1, 4096), ("params.temporal_strides", 1, 16),
    ("params.w_*", 0, 1e6), ("params.*_scale", 1e-6, 1), ("params.dropout", 0, 0.999),
    ("params.label_smoothing", 0, 1), ("params.bank_momentum", 0, 1),
    ("aug.size", 8, 1024), ("aug.*_p", 0, 1), ("aug.scale", 1e-6, 1), ("aug.ratio", 1e-3, 1e3),
    ("aug.brightness", 0, 10), ("aug.contrast", 0, 10), ("aug.saturation", 0, 10),
    ("aug.hue", 0, 0.5), ("aug.blur_sigma", 0, 100), ("aug.mean", -10, 10),
    ("aug.std", 1e-6, 100),
]
GENERIC = 1e9
ORDERED_PAIRS = ("scale", "ratio", "blur_sigma", "global_scale", "local_scale")


def _range_of(section: str, key: str) -> tuple[float, float] | None:
    import fnmatch
    full = f"{section}.{key}" if section else key
    for pattern, lo, hi in RANGES:
        if fnmatch.fnmatchcase(full, pattern) or (not section and pattern == key):
            return lo, hi
    return None


def check_values(config: dict) -> None:
    """Every number of ``config`` finite and within ``RANGES``; (low, high) pairs in order."""
    import math
    for section, values in (("", config), ("params", config["params"]), ("aug", config["aug"])):
        for key, value in values.items():
            if isinstance(value, dict):
                continue
            name = f"{section}.{key}" if section else key
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            bounds = _range_of(section, key) or (-GENERIC, GENERIC)
            for item in items:
                if isinstance(item, bool) or not isinstance(item, (int, float)):
                    continue
                if not math.isfinite(item) or not bounds[0] <= item <= bounds[1]:
                    raise UsageProblem(f"{name} = {item!r} is outside "
                                       f"[{bounds[0]:g}, {bounds[1]:g}]")
            if key in ORDERED_PAIRS and len(items) == 2 and items[0] > items[1]:
                raise UsageProblem(f"{name} = {list(items)}: the low end comes first")


def validate(config: dict) -> None:
    if config["optimizer"] not in OPTIMIZERS:
        raise UsageProblem(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
    if config["schedule"] not in SCHEDULES:
        raise UsageProblem(f"schedule must be one of {', '.join(SCHEDULES)}")
    if config["amp"] not in AMP_MODES:
        raise UsageProblem(f"amp must be one of {', '.join(AMP_MODES)}")
    if not isinstance(config["device"], str) or not DEVICE.fullmatch(config["device"]):
        raise UsageProblem(f"device {config['device']!r}: use auto, cpu, cuda, cuda:N or mps")
    if config["aug"]["jitter_order"] not in ("fixed", "random"):
        raise UsageProblem("aug.jitter_order must be fixed or random")
    if config["aug"]["channels"] not in ("rgb", "bgr"):
        raise UsageProblem("aug.channels must be rgb or bgr")
    for key in ("split", "backbone", "method"):
        if not isinstance(config[key], str) or not config[key]:
            raise UsageProblem(f"{key} must be a name, got {config[key]!r}")
    check_values(config)
    from vssl_cli.engine.trackers import require, tracker_names
    require(tracker_names(config))


def resolve(params_cls, recipe: str | None, options: dict, sets) -> dict:
    """The full config for one run (see the module docstring for the precedence)."""
    config = default_config(params_cls)
    config["backbone"] = getattr(params_cls, "default_backbone", config["backbone"])
    if recipe:
        doc = load_recipe(recipe)
        doc.pop("method", None)           # the method itself was chosen before this call
        apply_overrides(config, flatten_recipe(doc), recipe)
    apply_overrides(config, list(options.items()), "command line")
    apply_overrides(config, parse_set(sets), "--set")
    validate(config)
    _check_backbone(params_cls, config["backbone"])
    params = params_cls(**config["params"])
    check = getattr(params, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as e:
            raise UsageProblem(f"params: {e}") from None
    _check_maps(params, config["backbone"])
    return config


def _check_maps(params, backbone: str) -> None:
    """The method's clips against the backbone's temporal downsampling (e.g. TeG's
    step_frames, TCLR's n_local steps), so a recipe that cannot run fails here, --dry-run
    included, naming the keys to change, not after the data is loaded."""
    from vssl_cli.models import temporal_factors
    check = getattr(params, "check_maps", None)
    if check is None:
        return
    strides = getattr(params, "temporal_strides", None)
    try:
        check(temporal_factors(backbone, strides), backbone)
    except ValueError as e:
        raise UsageProblem(str(e)) from None


def _check_backbone(params_cls, backbone: str) -> None:
    """Frame methods (TCE) need a 2D backbone; clip methods take either."""
    from vssl_cli.models import FRAME_BACKBONES, is_frame_backbone
    if getattr(params_cls, "frame_backbone", False) and not is_frame_backbone(backbone):
        raise UsageProblem(f"this method needs a 2D frame backbone "
                           f"({', '.join(sorted(FRAME_BACKBONES))}), not {backbone}")


def recipe_method(recipe: str | None) -> str | None:
    return load_recipe(recipe).get("method") if recipe else None


def chosen_method(recipe: str | None, option: str | None, sets, default: str) -> str:
    """The method a run uses: ``--set method=`` over ``--method`` over the recipe's."""
    from_sets = [v for k, v in parse_set(sets) if k == "method"]
    name = from_sets[-1] if from_sets else option or recipe_method(recipe) or default
    if not isinstance(name, str):
        raise UsageProblem(f"method must be a name, got {name!r}")
    return name
