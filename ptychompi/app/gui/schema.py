"""The form: the config table as JSON fields, and form values (strings) back to a config.

Every key of :mod:`ptychompi.config` becomes one field named by its dotted path
(``algorithm.iterations``) with its kind, default, help text, choices and range. Values travel
as the strings a form holds; :func:`values_to_dict` parses them (YAML scalars, lists as
``a, b``) and :func:`validate` checks them with the CLI's own validation and error line.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any

import yaml

from ...config import SECTION_HELP, Config, config_from_dict
from ...errors import ConfigError

__all__ = ["fields", "schema", "values_to_dict", "dict_to_values", "validate", "PATH_KEYS"]

# keys holding file or folder paths: relative ones are taken relative to the GUI's --root
PATH_KEYS = ("data.path", "data.position_file", "data.mda_file", "algorithm.probe_guess",
             "algorithm.object_guess", "preprocess.beamstop_mask", "output.directory")


def _kind(tp: Any) -> tuple[str, bool, Any]:
    """(kind, nullable, inner type) of an annotation."""
    nullable = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(tp))
        tp = args[0]
        origin = typing.get_origin(tp)
    if origin is list:
        return "list", nullable, typing.get_args(tp)[0]
    if dataclasses.is_dataclass(tp):
        return "section", nullable, tp
    return {bool: "bool", int: "int", float: "float", str: "str", dict: "dict"}.get(
        tp, "str"), nullable, tp


def _walk(cls: type, prefix: str, default: Any, out: list[dict]) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}"
        kind, nullable, inner = _kind(hints[f.name])
        value = getattr(default, f.name) if default is not None else None
        if kind == "section":
            sub = value if value is not None else inner()
            _walk(inner, key, sub, out)
            continue
        meta = f.metadata
        item = {"key": key, "kind": kind, "nullable": nullable, "help": meta.get("help", ""),
                "choices": list(meta["choices"]) if meta.get("choices") else None,
                "low": meta.get("low"), "high": meta.get("high"),
                "default": _display(value, kind)}
        if kind == "list":
            item["item"] = _kind(inner)[0]
        out.append(item)


def fields() -> list[dict]:
    """Every leaf key of the config, in table order."""
    out: list[dict] = []
    cfg = Config()
    for f in dataclasses.fields(Config):
        _walk(type(getattr(cfg, f.name)), f.name, getattr(cfg, f.name), out)
    return out


def schema() -> dict:
    """Sections (name, help) and fields for the page."""
    return {"sections": [{"name": k, "help": v} for k, v in SECTION_HELP.items()],
            "fields": fields()}


def _display(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "bool":
        return "true" if value else "false"
    if kind == "list":
        return ", ".join(_display(v, "bool" if isinstance(v, bool) else "") for v in value)
    if kind == "dict":
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value)


def _parse(raw: Any, field: dict) -> Any:
    """One form string -> the YAML value it means (validation happens afterwards)."""
    kind = field["kind"]
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if text == "":
        if kind == "list" and not field["nullable"]:
            return []
        return None
    if kind == "str":
        return raw
    if kind == "list":
        if not text.startswith("["):
            text = f"[{text}]"
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"{field['key']} = {raw!r}: not a valid value") from None


def _set(tree: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value


def values_to_dict(values: dict[str, Any]) -> dict:
    """Form values (dotted key -> string) -> a nested config dict (unknown keys kept, so
    validation names them)."""
    by_key = {f["key"]: f for f in fields()}
    tree: dict = {}
    email_given = False
    for key, raw in values.items():
        field = by_key.get(key)
        if field is None:
            _set(tree, key, raw)
            continue
        value = _parse(raw, field)
        if key.startswith("output.notify.email."):
            if key == "output.notify.email.to" and value:
                email_given = True
            continue
        _set(tree, key, value)
    if email_given:  # the e-mail section exists only when it has recipients
        email = {}
        for key, raw in values.items():
            if key.startswith("output.notify.email.") and key in by_key:
                value = _parse(raw, by_key[key])
                if value is not None:
                    email[key.rsplit(".", 1)[1]] = value
        _set(tree, "output.notify.email", email)
    return tree


def _flatten(tree: Any, prefix: str, out: dict[str, Any]) -> None:
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and path not in ("data.mda_pv_map",):
            _flatten(value, path, out)
        else:
            out[path] = value


def dict_to_values(tree: dict) -> dict[str, str]:
    """A nested config dict -> form values (every key; absent ones take their default)."""
    flat: dict[str, Any] = {}
    _flatten(tree or {}, "", flat)
    out = {}
    for f in fields():
        out[f["key"]] = _display(flat[f["key"]], f["kind"]) if f["key"] in flat else f["default"]
    return out


_KEY = re.compile(r"(?:unknown config key ')?([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+)")


def validate(values: dict[str, Any]) -> dict:
    """``{"ok", "error", "key", "yaml", "config"}``: the CLI's check of the form's values.

    ``error`` is the line the CLI prints (``ptychompi: error: ...``), ``key`` the dotted key it
    names (for the form to mark), ``yaml`` the configuration as YAML (even when invalid).
    """
    try:
        tree = values_to_dict(values)
    except ConfigError as exc:
        m = _KEY.match(str(exc))
        return {"ok": False, "error": f"ptychompi: error: {exc}", "key": m and m.group(1),
                "yaml": "", "config": None}
    try:
        cfg = config_from_dict(tree)
    except ConfigError as exc:
        m = _KEY.match(str(exc))
        return {"ok": False, "error": f"ptychompi: error: {exc}", "key": m and m.group(1),
                "yaml": yaml.safe_dump(tree, sort_keys=False), "config": None}
    return {"ok": True, "error": None, "key": None, "yaml": cfg.to_yaml(),
            "config": cfg.to_dict()}
