"""Plain dicts (Hydra's, a checkpoint's, a JSON file's) <-> the package's frozen config dataclasses.

Hydra stays at the edges: `train(cfg)` turns its DictConfig into these dataclasses once, and a
checkpoint or an export folder stores them as plain dicts, so loading never needs Hydra.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping


class ConfigError(ValueError):
    """A config key the dataclass does not have (names the class and the key)."""


def _resolve(tp):
    """For `X | None` and Optional[X], the non-None member; tuple[...] stays as is."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def from_dict(cls, data: Mapping | None):
    """Build dataclass `cls` from a mapping, recursively; unknown keys are an error."""
    if data is None:
        return cls()
    if dataclasses.is_dataclass(data):
        return data
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    kwargs = {}
    for key, value in data.items():
        tp = _resolve(hints[key])
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            value = from_dict(tp, value)
        elif typing.get_origin(tp) is tuple and isinstance(value, (list, tuple)):
            args = typing.get_args(tp)
            inner = args[0] if args else None
            value = tuple(from_dict(inner, v) if dataclasses.is_dataclass(inner) and isinstance(v, Mapping) else v
                          for v in value)
        elif typing.get_origin(tp) is dict and isinstance(value, Mapping):
            value = dict(value)
        kwargs[key] = value
    return cls(**kwargs)


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def plain(cfg) -> dict:
    """A Hydra/OmegaConf node as plain Python containers (resolved)."""
    try:
        from omegaconf import DictConfig, OmegaConf
        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:
        pass
    return dict(cfg)
