"""A study's search space and each trial's config: the space read from YAML (`configs/tune_space.yaml`), a trial's
values suggested from it, and the config files merged with those values, as `house-price train` reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from house_price.errors import HousePriceError


def load_space(path: Path) -> dict[str, dict[str, Any]]:
    try:
        space = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise HousePriceError(
            f"search space '{path}' cannot be read ({error}); give a YAML file like configs/tune_space.yaml"
        ) from None
    if not isinstance(space, dict) or not space:
        raise HousePriceError(
            f"search space '{path}' holds no parameters; give `name: {{type: float, low: ..., high: ...}}` entries"
        )
    for name, entry in space.items():
        if not isinstance(entry, dict) or entry.get("type") not in ("float", "int", "categorical", "layers"):
            raise HousePriceError(f"search space '{path}': '{name}' needs a type of float, int, categorical or layers")
    return space


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The trial's value for every dotted option name of the space."""
    values = {}
    for name, entry in space.items():
        kind = entry["type"]
        if kind == "float":
            values[name] = trial.suggest_float(name, entry["low"], entry["high"], log=entry.get("log", False))
        elif kind == "int":
            values[name] = trial.suggest_int(name, entry["low"], entry["high"], log=entry.get("log", False))
        elif kind == "categorical":
            values[name] = trial.suggest_categorical(name, entry["choices"])
        else:
            width, depth = entry["width"], entry["depth"]
            size = trial.suggest_int(f"{name}.width", width["low"], width["high"], log=width.get("log", False))
            values[name] = [size] * trial.suggest_int(f"{name}.depth", depth["low"], depth["high"])
    return values


def values_of(params: dict[str, Any], space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A finished trial's stored params (layers as width and depth) -> option values."""
    values = {}
    for name, entry in space.items():
        values[name] = (
            [params[f"{name}.width"]] * params[f"{name}.depth"] if entry["type"] == "layers" else params[name]
        )
    return values


def as_option(name: str, value: Any) -> str:
    text = f"[{','.join(map(str, value))}]" if isinstance(value, list) else str(value)
    return f"--{name}={text}"


def dotted_options(options: list[str]) -> dict[str, Any]:
    """`--a.b=1` / `--a.b 1` train options -> {"a.b": 1} (values read as YAML)."""
    result, index = {}, 0
    while index < len(options):
        option = options[index].removeprefix("--")
        if "=" in option:
            name, text = option.split("=", 1)
        else:
            if index + 1 >= len(options):
                raise HousePriceError(f"option --{option} has no value; write --{option}=VALUE")
            name, text = option, options[index + 1]
            index += 1
        result[name] = yaml.safe_load(text)
        index += 1
    return result


def merged_config(configs: list[str], values: dict[str, Any]) -> dict[str, Any]:
    """The study's config files merged in order, then `values` (dotted names) set on top."""
    merged: dict[str, Any] = {}
    for path in configs:
        _merge(merged, yaml.safe_load(Path(path).read_text()) or {})
    for name, value in values.items():
        *parents, leaf = name.split(".")
        node = merged
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return merged


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
