"""Typed widgets for an augmentation step's parameters, read from the transform itself.

albumentations 2.x validates every transform's arguments with a pydantic `InitSchema`: its field
annotations say what a parameter is (a number, a (low, high) range, one of a few choices, a flag) and
their metadata the allowed range (ge/le, `check_range_bounds`, non-negative and non-decreasing
ranges); the transform's signature gives the default and its docstring the help text. The composites
of `engine.augment.registry` (PadRandomCrop, RandAugment) are read from their build function's
signature. A parameter no widget can hold (a dict of per-axis ranges, a per-channel fill, a mix of
choices and numbers) is edited as JSON. No Streamlit here: the builder lays out what this returns.

Widget kinds: int, float, bool, choice, int_pair, float_pair (two numbers: low, high) and json.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types
import yaml

EMPTY = inspect.Parameter.empty  # a parameter without a default (a crop's size: the training size fills it)

# The step's own p, and what only concerns masks, boxes or keypoints (classification has none).
HIDDEN = frozenset(
    {"p", "always_apply", "strict", "mask_interpolation", "fill_mask", "rotate_method", "mask", "mask_params"}
)
NUMBER_KINDS = ("int", "float")
PAIR_KINDS = ("int_pair", "float_pair")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a transform and the widgets that can edit it."""

    name: str
    kinds: tuple[str, ...]  # widget kinds its type allows, in the schema's order; () = JSON only
    default: Any = EMPTY
    optional: bool = False  # None is a valid value
    options: tuple = ()  # for "choice"
    option_labels: tuple = ()  # (value, label) pairs, e.g. (1, "INTER_LINEAR")
    min: float | None = None  # inclusive bounds of a number, or of each end of a range
    max: float | None = None
    range_text: str = ""  # the bounds in words: "≥ 0 and ≤ 1"
    increasing: bool = False  # a range must have low ≤ high
    symmetric: bool = False  # one number x means (-x, x)
    help: str = ""

    def kind_for(self, value) -> str:
        """The widget that holds this value: the first kind of the schema that fits it, else json."""
        kinds = self.kinds
        if value is None or value is EMPTY:
            if "choice" in kinds and None in self.options:
                return "choice"
            return next((k for k in kinds if k != "choice"), "json")
        if isinstance(value, bool):
            return "bool" if "bool" in kinds else "json"
        if "choice" in kinds and _in(value, self.options):
            return "choice"
        if _is_number(value):
            if isinstance(value, int) and "int" in kinds:
                return "int"
            return "float" if "float" in kinds else "json"
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value):
            if all(isinstance(v, int) for v in value) and "int_pair" in kinds:
                return "int_pair"
            return "float_pair" if "float_pair" in kinds else "json"
        return "json"

    def choice_label(self, value) -> str:
        labels = dict(self.option_labels)
        return labels.get(value, "none" if value is None else str(value))

    def help_text(self, kind: str) -> str:
        parts = [self.help]
        if self.symmetric and kind in NUMBER_KINDS:
            parts.append("One number x means the range (-x, x).")
        if kind in PAIR_KINDS:
            parts.append("A range: a value is drawn between low and high.")
        if self.range_text and kind in NUMBER_KINDS + PAIR_KINDS:
            parts.append(f"Allowed: {self.range_text}.")
        if self.default is not EMPTY and _text(self.default):
            parts.append(f"Default: {_text(self.default)}.")
        elif kind != "json":
            parts.append("Empty: the training image size (crops and resizes) or the transform's own rule.")
        return " ".join(p for p in parts if p)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _in(value, options) -> bool:
    return any(value == o and type(value) is type(o) for o in options)


def _plain(v):
    """Tuples -> lists, recursively: the form a value has in a config (JSON/YAML)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _text(v) -> str:
    """JSON of a plain value; "" for what JSON cannot hold (a default that is a function)."""
    try:
        return json.dumps(_plain(v))
    except (TypeError, ValueError):
        return ""


def same(a, b) -> bool:
    """Equal as config values (a tuple default equals the list a config holds)."""
    return _plain(a) == _plain(b)


# ------------------------------------------------------------------------------- reading a transform
def _alternatives(tp) -> list[tuple[Any, list]]:
    """A type's union members with their Annotated metadata: [(type, metadata), ...]."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        inner, *meta = typing.get_args(tp)
        return [(t, m + meta) for t, m in _alternatives(inner)]
    if origin in (typing.Union, types.UnionType):
        return [alt for arg in typing.get_args(tp) for alt in _alternatives(arg)]
    return [(tp, [])]


def _kind_of(tp) -> str | None:
    if tp is bool:
        return "bool"
    if tp is int:
        return "int"
    if tp is float:
        return "float"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "choice"
    if origin is tuple and len(args) == 2 and args[0] is args[1] and args[0] in (int, float):
        return "int_pair" if args[0] is int else "float_pair"
    return None


# (annotated_types limit, its attribute, in words, a lower bound?, exclusive?)
_LIMITS = (
    (annotated_types.Ge, "ge", "≥", True, False),
    (annotated_types.Gt, "gt", ">", True, True),
    (annotated_types.Le, "le", "≤", False, False),
    (annotated_types.Lt, "lt", "<", False, True),
)


def _limits(metadata) -> list[tuple[float, str, bool, bool]]:
    """[(limit, sign, lower?, exclusive?)] from ge/gt/le/lt and albumentations' range validators."""
    out = []
    for m in metadata:
        for cls, attr, sign, lower, exclusive in _LIMITS:
            if isinstance(m, cls):
                out.append((getattr(m, attr), sign, lower, exclusive))
        func = getattr(m, "func", None)
        if func is None:
            continue
        name = getattr(func, "__name__", "")
        cells = dict(zip(func.__code__.co_freevars, (c.cell_contents for c in func.__closure__ or ())))
        if "min_val" in cells:  # albumentations' check_range_bounds(min_val, max_val, min_inclusive, max_inclusive)
            if cells["min_val"] is not None:
                exclusive = not cells.get("min_inclusive", True)
                out.append((cells["min_val"], ">" if exclusive else "≥", True, exclusive))
            if cells.get("max_val") is not None:
                exclusive = not cells.get("max_inclusive", True)
                out.append((cells["max_val"], "<" if exclusive else "≤", False, exclusive))
        elif name in ("process_non_negative_range", "convert_to_0plus_range"):
            out.append((0, "≥", True, False))
    return out


def _bounds(limits, integer: bool) -> tuple[float | None, float | None, str]:
    lo = hi = None
    words = []
    for limit, sign, lower, exclusive in limits:
        bound = limit
        if exclusive:
            if integer:
                bound = math.floor(limit) + 1 if lower else math.ceil(limit) - 1
            else:
                bound = math.nextafter(limit, math.inf if lower else -math.inf)
        if lower:
            lo = bound if lo is None else max(lo, bound)
        else:
            hi = bound if hi is None else min(hi, bound)
        words.append(f"{sign} {int(limit) if float(limit).is_integer() else limit!r}")
    return lo, hi, " and ".join(dict.fromkeys(words))


def _validator_names(metadata) -> set[str]:
    return {getattr(getattr(m, "func", None), "__name__", "") for m in metadata}


def _cv2_labels(annotation_text: str, options: tuple) -> tuple:
    """OpenCV flag names for Literal codes: the signature writes Literal[cv2.INTER_LINEAR, ...]."""
    names = re.findall(r"cv2\.(\w+)", annotation_text)
    if not names:
        return ()
    import cv2

    by_value = {getattr(cv2, n): n for n in names if isinstance(getattr(cv2, n, None), int)}
    return tuple((o, f"{by_value[o]} ({o})") for o in options if o in by_value)


def _doc_args(obj) -> dict[str, str]:
    """Each argument's description from a Google-style docstring ("Args:" block), shortened."""
    doc = inspect.getdoc(obj) or ""
    block = re.search(r"^Args:\n(.*?)(?=^\S|\Z)", doc, re.S | re.M)
    out: dict[str, str] = {}
    current = None
    for line in (block.group(1) if block else "").splitlines():
        m = re.match(r"^ {4}(\w+)(?: \(.*?\))?:\s*(.*)$", line)
        if m:
            current = m.group(1)
            out[current] = m.group(2).strip()
        elif current and line.startswith(" " * 8):
            out[current] += " " + line.strip()
    return {k: (v if len(v) <= 300 else v[:297].rsplit(" ", 1)[0] + "…") for k, v in out.items()}


def _spec(name: str, annotation, metadata, default, annotation_text: str, help_text: str) -> ParamSpec:
    kinds, options, optional, meta = [], (), False, list(metadata)
    for tp, inner_meta in _alternatives(annotation):
        meta += inner_meta
        if tp is type(None):
            optional = True
            continue
        kind = _kind_of(tp)
        if kind == "choice":
            options = options + tuple(o for o in typing.get_args(tp) if o not in options)
            optional = optional or None in options
        if kind and kind not in kinds:
            kinds.append(kind)
    if "choice" in kinds and any(k not in ("choice",) for k in kinds):
        kinds = [k for k in kinds if k != "choice"]  # numbers or words: one widget cannot offer both
        options = ()
    integer = bool(kinds) and all(k in ("int", "int_pair") for k in kinds if k in NUMBER_KINDS + PAIR_KINDS)
    lo, hi, words = _bounds(_limits(meta), integer)
    validators = _validator_names(meta)
    return ParamSpec(
        name=name,
        kinds=tuple(kinds),
        default=default,
        optional=optional,
        options=options,
        option_labels=_cv2_labels(annotation_text, options) if options else (),
        min=lo,
        max=hi,
        range_text=words,
        increasing="nondecreasing" in validators,
        symmetric="create_symmetric_range" in validators,
        help=help_text,
    )


@functools.lru_cache(maxsize=256)
def param_specs(name: str) -> tuple[ParamSpec, ...] | None:
    """The editable parameters of a transform, in its signature's order; None for an unknown name."""
    from engine.augment import registry
    from engine.augment.composites import albumentations

    entry = registry.get(name)
    if entry is not None and entry.build is not None:  # a composite: its build function's signature
        fn = entry.build
        hints = typing.get_type_hints(fn)
        return tuple(
            _spec(n, hints.get(n, Any), [], p.default, "", "")
            for n, p in inspect.signature(fn).parameters.items()
            if n not in HIDDEN and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        )
    A = albumentations()
    cls = getattr(A, name, None)
    if name.startswith("_") or not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
        return None
    schema = getattr(cls, "InitSchema", None)
    fields = getattr(schema, "model_fields", {}) if schema is not None else {}
    docs = _doc_args(cls)
    specs = []
    for n, p in inspect.signature(cls.__init__).parameters.items():
        if n == "self" or n in HIDDEN or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        info = fields.get(n)
        annotation, metadata = (info.annotation, info.metadata) if info is not None else (Any, [])
        specs.append(_spec(n, annotation, metadata, p.default, str(p.annotation), docs.get(n, "")))
    return tuple(specs)


def specs_by_name(name: str) -> dict[str, ParamSpec]:
    return {s.name: s for s in param_specs(name) or ()}


# ------------------------------------------------------------------------------- widget values
def key(uid: str, param: str, part: int | None = None) -> str:
    """Session-state key of a parameter's widget ("aug:s3:v:limit", a range's ends ":0" and ":1")."""
    return f"aug:{uid}:v:{param}" + ("" if part is None else f":{part}")


def widget_values(uid: str, param: str, kind: str, value) -> dict[str, Any]:
    """What the widget(s) of one parameter hold for a value (EMPTY/None -> an empty widget)."""
    empty = value is EMPTY or value is None
    if kind in PAIR_KINDS:
        cast = int if kind == "int_pair" else float
        ends = (None, None) if empty else tuple(cast(v) for v in value)
        return {key(uid, param, 0): ends[0], key(uid, param, 1): ends[1]}
    if kind in NUMBER_KINDS:
        return {key(uid, param): None if empty else (int if kind == "int" else float)(value)}
    if kind == "bool":
        return {key(uid, param): bool(value) if not empty else False}
    if kind == "choice":
        return {key(uid, param): None if empty else value}
    return {key(uid, param): "" if value is EMPTY else _text(value)}  # empty: the transform's default


def read_value(state, uid: str, param: str, kind: str):
    """A parameter's value from its widget(s); None when left empty; ValueError for text that does not
    parse or a range with one end missing."""
    if kind in PAIR_KINDS:
        ends = [state.get(key(uid, param, i)) for i in (0, 1)]
        if ends == [None, None]:
            return None
        if None in ends:
            raise ValueError("enter both ends of the range (low and high), or neither")
        cast = int if kind == "int_pair" else float
        return [cast(v) for v in ends]
    value = state.get(key(uid, param))
    if kind in NUMBER_KINDS:
        return None if value is None else (int if kind == "int" else float)(value)
    if kind == "bool":
        return bool(value)
    if kind == "choice":
        return value
    text = (value or "").strip()
    if not text:
        return None
    from engine.config import ConfigError, load_yaml_strict

    try:
        return load_yaml_strict(text)  # a key given twice or nesting too deep: one line, not the last key kept
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid JSON/YAML: {str(exc).splitlines()[0]}") from None
    except ConfigError as exc:
        raise ValueError(exc.errors[0][1]) from None


def problem(spec: ParamSpec, kind: str, value) -> str | None:
    """Why a typed value is outside what the schema allows (range, low ≤ high), or None."""
    if value is None:
        return None
    numbers = value if kind in PAIR_KINDS else [value] if kind in NUMBER_KINDS else []
    for v in numbers:
        if (spec.min is not None and v < spec.min) or (spec.max is not None and v > spec.max):
            shown = value if kind in PAIR_KINDS else v
            return f"{json.dumps(shown)} is out of range: must be {spec.range_text}"
    if kind in PAIR_KINDS and spec.increasing and value[0] > value[1]:
        return f"{json.dumps(value)}: low must not be above high"
    return None


# ------------------------------------------------------------------------------- defaults that fit the images
def fit_params(name: str, params: dict, side: int | None) -> dict:
    """A step's starting params fitted to images of `side` px: pad-and-crop by at most an eighth of the
    side (4 px of a 32 px image, 1 px of an 8 px digit) and no crop larger than the image."""
    if not side:
        return dict(params)
    side = int(side)
    out = dict(params)
    if name == "PadRandomCrop" and isinstance(out.get("padding"), int):
        out["padding"] = min(out["padding"], max(1, side // 8))
    for k in ("height", "width"):
        if isinstance(out.get(k), int) and out[k] > side:
            out[k] = side
    if isinstance(out.get("size"), (list, tuple)):
        out["size"] = [min(int(v), side) for v in out["size"]]
    return out


def fitted_defaults(defaults: dict[str, dict], side: int | None) -> dict[str, dict]:
    """The builder's starting params of every transform, fitted to images of `side` px."""
    return {name: fit_params(name, params, side) for name, params in defaults.items()}
