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
import tomllib
from typing import Any

from vssl_cli.data.augment import AugConfig
from vssl_cli.errors import UsageProblem


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
    seed: int = 0
    workers: int = -1               # DataLoader readers; -1: auto (engine/device.py)
    device: str = "auto"
    amp: str = "auto"               # auto (bf16/fp16 on CUDA) | bf16 | fp16 | off
    channels_last: bool = True      # CUDA only
    compile: bool = False
    sync_bn: bool = True            # DDP on CUDA only
    checkpoint_every: int = 500     # steps
    log_every: int = 10             # steps


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AMP_MODES = ("auto", "bf16", "fp16", "off")


def _fields(cls) -> dict[str, Any]:
    return {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}


def default_config(params_cls) -> dict:
    return {**_fields(TrainConfig), "params": _fields(params_cls), "aug": _fields(AugConfig)}


def load_recipe(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UsageProblem("recipe not found", path) from None
    except tomllib.TOMLDecodeError as e:
        raise UsageProblem(f"invalid recipe TOML: {e}", path) from None


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


def validate(config: dict) -> None:
    if config["optimizer"] not in OPTIMIZERS:
        raise UsageProblem(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
    if config["schedule"] not in SCHEDULES:
        raise UsageProblem(f"schedule must be one of {', '.join(SCHEDULES)}")
    if config["amp"] not in AMP_MODES:
        raise UsageProblem(f"amp must be one of {', '.join(AMP_MODES)}")
    for key in ("epochs", "max_steps", "checkpoint_every", "log_every"):
        if config[key] < 0:
            raise UsageProblem(f"{key} must be >= 0")
    if config["workers"] < -1:
        raise UsageProblem("workers must be >= 0, or -1 for auto")
    if config["batch_size"] < 2:
        raise UsageProblem("batch_size must be at least 2 (contrastive losses and BatchNorm)")
    if config["lr"] <= 0:
        raise UsageProblem("lr must be positive")


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
    check = getattr(params_cls(**config["params"]), "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as e:
            raise UsageProblem(f"params: {e}") from None
    return config


def _check_backbone(params_cls, backbone: str) -> None:
    """Frame methods (TCE) need a 2D backbone; clip methods take either."""
    from vssl_cli.models import FRAME_BACKBONES, is_frame_backbone
    if getattr(params_cls, "frame_backbone", False) and not is_frame_backbone(backbone):
        raise UsageProblem(f"this method needs a 2D frame backbone "
                           f"({', '.join(sorted(FRAME_BACKBONES))}), not {backbone}")


def recipe_method(recipe: str | None) -> str | None:
    return load_recipe(recipe).get("method") if recipe else None
