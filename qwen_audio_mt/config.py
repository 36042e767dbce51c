"""Plain dicts (Hydra's, a checkpoint's, a JSON file's) <-> the package's frozen config dataclasses.

Hydra stays at the edges: `train(cfg)` turns its DictConfig into these dataclasses once, and a
checkpoint or an export folder stores them as plain dicts, so loading never needs Hydra.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping

from .errors import ConfigError

__all__ = ["ConfigError", "from_dict", "to_dict", "plain"]
_SCALARS = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}


def _optional(tp) -> bool:
    return type(None) in typing.get_args(tp)


def _check_scalar(tp, value, key: str) -> None:
    """A wrong scalar type fails here, naming the key, rather than deep inside the job."""
    ok = _SCALARS.get(tp)
    if ok is None or (value is None) or isinstance(value, ok) and not (tp is not bool and isinstance(value, bool)):
        return
    raise ConfigError(f"{key}={value!r}: expected {tp.__name__}")


def _resolve(tp):
    """For `X | None` and Optional[X], the non-None member; tuple[...] stays as is."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def from_dict(cls, data: Mapping | None, where: str | None = None):
    """Build dataclass `cls` from a mapping, recursively. Unknown keys, a scalar of the wrong
    type and a mapping expected but not given are ConfigErrors naming the key as `where.key`
    (`where`: the config node, e.g. "mixture"; the class name when not given)."""
    if data is None:
        return cls()
    if dataclasses.is_dataclass(data):
        return data
    where = where or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}={data!r}: expected a mapping of {', '.join(f.name for f in dataclasses.fields(cls))}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where} has no key(s) {', '.join(unknown)}; its keys: {', '.join(sorted(names))}")
    return cls(**{key: _field(hints[key], value, f"{where}.{key}") for key, value in data.items()})


def _field(hint, value, key: str):
    tp = _resolve(hint)
    if value is None and _optional(hint):
        return None
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if typing.get_origin(tp) is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        inner = args[0] if args else None
        if dataclasses.is_dataclass(inner):
            return tuple(from_dict(inner, v, f"{key}[{i}]") for i, v in enumerate(value))
        return tuple(value)
    if typing.get_origin(tp) is dict and isinstance(value, Mapping):
        return dict(value)
    _check_scalar(tp, value, key)
    return value


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
