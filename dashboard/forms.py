"""The run builder's logic, free of Streamlit: widget values <-> config dict, and errors by field.

The builder shows one widget per leaf field of `ExperimentConfig`. The list of fields is read from
the pydantic model itself (`field_specs`): label, help, advanced, step and when the field is shown
(show_if) come from each field's `ui(...)` metadata in engine.config, its range from the schema, so
a field added to the config appears in the builder without touching the page or this module.
Widgets are keyed `cfg:<dotted path>` ("cfg:optim.lr"); the augmentation list is edited as steps
keyed by a stable uid ("aug:<uid>:p", one typed widget per parameter "aug:<uid>:v:<param>" read
from the transform's schema by dashboard.aug_params, and "aug:<uid>:params" for JSON of any other
params) so reordering never mixes up params.

Everything here takes and returns plain data, so it is unit-tested without a browser.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel

from dashboard import aug_params
from dashboard.text import plain
from engine.config import AugmentStep, ExperimentConfig, non_default_settings, short_setting_name

KEY_PREFIX = "cfg:"
STEPS_KEY = "aug_steps"  # session key: list of {"uid", "name", "fields", "keys"} in pipeline order
PIPELINE_FOR_BUILDER = "builder_use_pipeline"  # session key: an augment section the builder takes next

# (config section, tab title) in the order the builder shows them.
SECTIONS: list[tuple[str, str]] = [
    ("data", "Data"),
    ("model", "Model"),
    ("augment", "Augmentation"),
    ("optim", "Optimizer"),
    ("schedule", "LR schedule"),
    ("loss", "Loss"),
    ("regularize", "Regularization"),
    ("train", "Training"),
    ("eval", "Evaluation"),
]
SECTION_TITLES = dict(SECTIONS) | {"general": "General"}

DEFAULT_MODEL_NAME = {"custom": "small_cnn", "timm": "resnet18", "torchvision": "resnet18"}
CUSTOM_MODELS = ["small_cnn", "resnet"]
TIMM_SUGGESTIONS = [
    "resnet18",
    "resnet26d",
    "resnet34",
    "resnet50",
    "resnet50d",
    "seresnext26d_32x4d",
    "wide_resnet50_2",
    "efficientnet_b0",
    "efficientnet_b2",
    "mobilenetv3_large_100",
    "mobilenetv4_conv_small",
    "convnext_nano",
    "convnext_tiny",
    "regnety_008",
    "densenet121",
    "vit_tiny_patch16_224",
    "deit_tiny_patch16_224",
]
TORCHVISION_SUGGESTIONS = [
    "resnet18",
    "resnet34",
    "resnet50",
    "wide_resnet50_2",
    "resnext50_32x4d",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "convnext_tiny",
    "regnet_y_800mf",
    "densenet121",
    "shufflenet_v2_x1_0",
    "vit_b_16",
]


# ------------------------------------------------------------------------------- field specs
@dataclass(frozen=True)
class FieldSpec:
    """One leaf field of the config and how the builder edits it."""

    path: str  # dotted, e.g. "optim.lr"
    kind: str  # bool | int | float | text | choice | multichoice | int_list | float_list | steps | model_name | dataset
    label: str
    help: str
    default: Any
    optional: bool = False  # None is a valid value (empty widget)
    options: tuple = ()
    min: float | None = None  # inclusive bounds, strictly inside the schema's gt/lt
    max: float | None = None
    step: float | None = None
    advanced: bool = False
    show_if: Any = field(default=None, compare=False)  # engine.config.ShowIf; None = always shown
    range_text: str = ""  # the schema's range in words, e.g. "> 0 and ≤ 10"

    @property
    def key(self) -> str:
        return KEY_PREFIX + self.path

    @property
    def section(self) -> str:
        return section_of(self.path)


def _unwrap_optional(tp):
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


JS_SAFE_INT = 2**53 - 1  # a browser number input cannot hold more; larger schema bounds mean "no bound"


def _inside(limit: float, kind: str, up: bool) -> float:
    """The value next to an exclusive limit, on the allowed side (gt=0 -> the smallest float above 0)."""
    if kind == "int":
        return math.floor(limit) + 1 if up else math.ceil(limit) - 1
    return math.nextafter(limit, math.inf if up else -math.inf)


# (schema limit, its attribute, in words, a lower bound?, exclusive?)
_LIMITS = (
    (annotated_types.Ge, "ge", "≥", True, False),
    (annotated_types.Gt, "gt", ">", True, True),
    (annotated_types.Le, "le", "≤", False, False),
    (annotated_types.Lt, "lt", "<", False, True),
)


def _bounds(metadata, kind: str) -> tuple[float | None, float | None, str]:
    """(inclusive min, inclusive max, the range in words) from the schema's ge/gt/le/lt."""
    lo = hi = None
    words = []
    for m in metadata:
        for cls, attr, sign, lower, exclusive in _LIMITS:
            limit = getattr(m, attr, None)
            if not isinstance(m, cls) or (limit < -JS_SAFE_INT if lower else limit > JS_SAFE_INT):
                continue
            bound = _inside(limit, kind, up=lower) if exclusive else limit
            lo, hi = (bound, hi) if lower else (lo, bound)
            words.append(f"{sign} {int(limit) if float(limit).is_integer() else limit!r}")
    return lo, hi, " and ".join(words)


def _bare(tp):
    """int for StrictInt (Annotated[int, Strict()]): the schema's strict number types are numbers here."""
    return typing.get_args(tp)[0] if typing.get_origin(tp) is typing.Annotated else tp


def _kind(tp) -> tuple[str, tuple]:
    tp = _bare(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "bool", ()
    if tp is int:
        return "int", ()
    if tp is float:
        return "float", ()
    if tp is str:
        return "text", ()
    if origin is Literal:
        return "choice", tuple(args)
    if origin in (list, tuple):
        inner = _bare(args[0]) if args else Any
        if typing.get_origin(inner) is Literal:
            return "multichoice", typing.get_args(inner)
        if inner is int:
            return "int_list", ()
        if inner is float:
            return "float_list", ()
        if inner is AugmentStep:
            return "steps", ()
    raise TypeError(f"the builder has no widget for {tp!r}")


def _humanise(path: str) -> str:
    return path.rsplit(".", 1)[-1].replace("_", " ").capitalize()


def _default_step(kind: str, default, lo, hi) -> float | None:
    if kind == "int":
        return 1
    if kind != "float":
        return None
    if isinstance(default, (int, float)) and default > 0:
        return min(0.1, 10 ** math.floor(math.log10(default)))
    return 0.01 if (hi is not None and hi <= 1) else 0.1


def _walk(model: type[BaseModel], prefix: str = ""):
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        tp, optional = _unwrap_optional(info.annotation)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and tp is not AugmentStep:
            yield from _walk(tp, path + ".")
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        ui = extra.get("ui", {})  # engine.config.ui(...)
        kind, options = _kind(tp)
        kind = ui.get("widget", kind)
        default = info.get_default(call_default_factory=True)
        lo, hi, range_text = _bounds(info.metadata, kind) if kind in ("int", "float") else (None, None, "")
        yield FieldSpec(
            path=path,
            kind=kind,
            label=ui.get("label") or _humanise(path),
            help=ui.get("help") or info.description or "",
            default=default,
            optional=optional,
            options=options,
            min=lo,
            max=hi,
            step=ui.get("step") or _default_step(kind, default, lo, hi),
            advanced=bool(ui.get("advanced")),
            show_if=ui.get("show_if"),
            range_text=range_text,
        )


_SPECS: list[FieldSpec] | None = None


def field_specs() -> list[FieldSpec]:
    """Every leaf field of ExperimentConfig, in declaration order."""
    global _SPECS
    if _SPECS is None:
        _SPECS = list(_walk(ExperimentConfig))
    return _SPECS


def specs_by_section() -> dict[str, list[FieldSpec]]:
    out: dict[str, list[FieldSpec]] = {"general": []}
    for s in field_specs():
        out.setdefault(s.section, []).append(s)
    return out


def section_of(path: str) -> str:
    head = path.split(".", 1)[0]
    return head if head in SECTION_TITLES and head != "general" else "general"


# ------------------------------------------------------------------------------- nested dict access
def get_path(data: dict, path: str, default=None):
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def set_path(data: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def default_config() -> dict:
    return ExperimentConfig().model_dump(mode="json")


# ------------------------------------------------------------------------------- value <-> widget
def _list_text(values) -> str:
    if values is None:
        return ""
    return ", ".join(_num_text(v) for v in values)


def _num_text(v) -> str:
    return (
        str(int(v))
        if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1)
        else repr(float(v))
    )


def _parse_list(text: str, kind: str, optional: bool):
    """'64, 128' -> [64, 128]; raises ValueError with a message a person understands."""
    text = (text or "").strip().strip("[]()").strip()
    if not text:
        return None if optional else []
    out = []
    for part in re.split(r"[,\s;]+", text):
        if not part:
            continue
        try:
            out.append(int(part) if kind == "int_list" else float(part))
        except ValueError:
            what = "whole numbers" if kind == "int_list" else "numbers"
            raise ValueError(f"'{part}' is not a number: enter {what} separated by commas") from None
    return out


def to_widget(spec: FieldSpec, value):
    """A config value -> what the widget holds."""
    if spec.kind in ("int_list", "float_list"):
        return _list_text(value)
    if spec.kind in ("text", "model_name", "dataset"):
        return "" if value is None else str(value)
    if spec.kind == "multichoice":
        return list(value or [])
    if spec.kind == "float" and value is not None:
        return float(value)
    if spec.kind == "int" and value is not None:
        return int(value)
    return value


def out_of_range(spec: FieldSpec, value) -> str | None:
    """Why a number the user typed is outside the field's range, or None. The page's number inputs
    carry no bounds on purpose: a browser silently keeps the last in-range value otherwise."""
    if spec.kind not in ("int", "float") or not isinstance(value, (int, float)):
        return None
    if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
        return f"{_num_text(value)} is out of range: must be {spec.range_text}"
    return None


def from_widget(spec: FieldSpec, value):
    """What the widget holds -> a config value; raises ValueError for text that does not parse."""
    if spec.kind in ("int_list", "float_list"):
        return _parse_list(value, spec.kind, spec.optional)
    if spec.kind in ("text", "model_name", "dataset"):
        value = (value or "").strip()
        return None if (spec.optional and not value) else value
    if spec.kind == "multichoice":
        return list(value or [])
    return value


# ------------------------------------------------------------------------------- augmentation steps
_uids = itertools.count(1)


def new_uid() -> str:
    return f"s{next(_uids)}"


def params_text(params: dict) -> str:
    return json.dumps(params or {}, separators=(", ", ": "))


def parse_params(text: str) -> dict:
    """JSON or YAML mapping text -> dict; raises ValueError with a readable message."""
    text = (text or "").strip()
    if not text:
        return {}
    if not text.startswith("{"):
        text = "{" + text + "}"  # allow 'padding: 4' without braces
    from engine.config import ConfigError, load_yaml_strict

    try:
        data = load_yaml_strict(text)  # a key given twice or nesting too deep: one line, not the last key kept
    except yaml.YAMLError as exc:
        raise ValueError(f"params are not valid JSON/YAML: {str(exc).splitlines()[0]}") from None
    except ConfigError as exc:
        raise ValueError(f"params: {exc.errors[0][1]}") from None
    if not isinstance(data, dict):
        raise ValueError('params must be a mapping like {"limit": 15}')
    return data


def step_state(name: str, p: float = 0.5, params: dict | None = None, defaults: dict | None = None) -> dict:
    """Session-state entries for one new step: its row in STEPS_KEY and its widget values.

    Every parameter of the transform gets a typed widget (dashboard.aug_params: numbers, ranges as two
    numbers, choices, flags; JSON for the rest), keyed "aug:<uid>:v:<param>". The row records each
    widget's kind (a value that is a number or a range keeps the widget it came with) and the params
    the step was given ("keys": those are always written back; the others only when changed from the
    transform's default). Params no widget edits (unknown names, masks) stay in the JSON box
    "aug:<uid>:params", so nothing given is ever dropped."""
    uid = new_uid()
    if params is None:
        params = dict((defaults or {}).get(name, {}))
    rest = dict(params or {})
    fields: dict[str, str] = {}
    widgets: dict[str, Any] = {}
    for spec in aug_params.param_specs(name) or ():
        value = rest.pop(spec.name, spec.default)
        kind = spec.kind_for(value)
        fields[spec.name] = kind
        widgets.update(aug_params.widget_values(uid, spec.name, kind, value))
    keys = [k for k in (params or {}) if k in fields]
    row = {"uid": uid, "name": name, "fields": fields, "keys": keys}
    return {"row": row, f"aug:{uid}:p": float(p), f"aug:{uid}:params": params_text(rest), **widgets}


def add_step(state: dict, name: str, defaults: dict | None = None, p: float = 0.5) -> None:
    entry = step_state(name, p=p, defaults=defaults)
    state[STEPS_KEY] = list(state.get(STEPS_KEY, [])) + [entry.pop("row")]
    state.update(entry)


def with_pipeline(config: dict, augment: dict) -> dict:
    """`config` with its augmentation pipeline (train steps, and mixup when given) replaced by `augment`'s:
    what "Use this pipeline" on the Augmentations page sends to the builder. The rest is kept."""
    out = merge(config or {}, {})
    section = dict(out.get("augment") or {})
    section["train"] = [dict(step) for step in augment.get("train") or []]
    if isinstance(augment.get("mixup"), dict):
        section["mixup"] = dict(augment["mixup"])
    out["augment"] = section
    return out


def move_step(state: dict, index: int, delta: int) -> None:
    steps = list(state.get(STEPS_KEY, []))
    j = index + delta
    if 0 <= index < len(steps) and 0 <= j < len(steps):
        steps[index], steps[j] = steps[j], steps[index]
    state[STEPS_KEY] = steps


def remove_step(state: dict, index: int) -> None:
    steps = list(state.get(STEPS_KEY, []))
    if 0 <= index < len(steps):
        steps.pop(index)
    state[STEPS_KEY] = steps


_P_MIN, _P_MAX, _P_RANGE = _bounds(AugmentStep.model_fields["p"].metadata, "float")


def typed_params(state, row: dict, skip=()) -> tuple[dict, list[str]]:
    """A step's params from its typed widgets, and what is wrong with them ("scale: [0.8, 1.5] is out of
    range: must be ≥ 0 and ≤ 1"). A value out of range is kept as typed and reported, never replaced;
    an empty widget leaves the param to the transform's default (or the training size)."""
    specs = aug_params.specs_by_name(row["name"])
    keys = set(row.get("keys", ()))
    params: dict[str, Any] = {}
    errors: list[str] = []
    for name, kind in (row.get("fields") or {}).items():
        if name in skip:
            continue
        try:
            value = aug_params.read_value(state, row["uid"], name, kind)
        except ValueError as exc:
            errors.append(f"{name}: {exc}")
            continue
        spec = specs.get(name)
        if value is None and kind != "choice":  # an empty widget: the default (a choice may offer None)
            continue
        if spec is None or name in keys or not aug_params.same(value, spec.default):
            params[name] = value
        if spec is not None and (why := aug_params.problem(spec, kind, value)) is not None:
            errors.append(f"{name}: {why}")
    return params, errors


def steps_from_state(state) -> tuple[list[dict], list[tuple[str, str]]]:
    """The pipeline as config dicts, plus parse errors keyed 'augment.train.<i>'."""
    steps, errors = [], []
    for i, row in enumerate(state.get(STEPS_KEY, [])):
        uid = row["uid"]
        try:
            extra = parse_params(state.get(f"aug:{uid}:params", "{}"))
        except ValueError as exc:
            errors.append((f"augment.train.{i}", str(exc)))
            extra = {}
        params, typed_errors = typed_params(state, row, skip=set(extra))
        errors += [(f"augment.train.{i}", msg) for msg in typed_errors]
        params.update(extra)  # the JSON box wins over a widget for the same param
        p = state.get(f"aug:{uid}:p", 0.5)
        p = 0.5 if p is None else float(p)
        if not _P_MIN <= p <= _P_MAX:
            errors.append((f"augment.train.{i}", f"p = {_num_text(p)} is out of range: must be {_P_RANGE}"))
        steps.append({"name": row["name"], "p": p, "params": params})
    return steps, errors


# ------------------------------------------------------------------------------- whole form
def config_to_state(config: dict) -> dict:
    """A config dict (possibly partial) -> every session-state entry the builder needs to show it."""
    full = merge(default_config(), config)
    state: dict[str, Any] = {}
    for spec in field_specs():
        if spec.kind == "steps":
            continue
        state[spec.key] = to_widget(spec, get_path(full, spec.path, spec.default))
    rows = []
    for step in full.get("augment", {}).get("train", []) or []:
        entry = step_state(step["name"], step.get("p", 0.5), step.get("params", {}))
        rows.append(entry.pop("row"))
        state.update(entry)
    state[STEPS_KEY] = rows
    return state


def state_to_config(state, base: dict | None = None) -> tuple[dict, list[tuple[str, str]]]:
    """Session state (widget values) -> config dict and the form's errors [(field, message)].

    Fields whose widget is not in `state` (hidden because irrelevant) keep their value from `base`
    (the last config the builder produced), else the default. A number out of its range is put in
    the config as typed and reported: it is never replaced by an earlier value."""
    config = merge(default_config(), base or {})
    errors: list[tuple[str, str]] = []
    for spec in field_specs():
        if spec.kind == "steps":
            continue
        if spec.key not in state:
            continue
        try:
            value = from_widget(spec, state[spec.key])
        except ValueError as exc:
            errors.append((spec.path, str(exc)))
            continue
        set_path(config, spec.path, value)
        if (problem := out_of_range(spec, value)) is not None:
            errors.append((spec.path, problem))
    steps, step_errors = steps_from_state(state)
    config.setdefault("augment", {})["train"] = steps
    _reset_hidden_model_fields(config)
    return config, errors + step_errors


def _reset_hidden_model_fields(config: dict) -> None:
    """A model-dependent field hidden for the model now chosen (e.g. ShakeDrop after switching from the
    custom ResNet to an EfficientNet) goes back to its default: it would do nothing, and be refused."""
    from engine.config import MODEL_DEPENDENT_FIELDS

    specs = {s.path: s for s in field_specs()}
    defaults = default_config()
    for path in MODEL_DEPENDENT_FIELDS:
        if path in specs and not is_relevant(specs[path], config):
            set_path(config, path, get_path(defaults, path))
    if get_path(config, "model.source") != "custom":  # widths shape the custom models only (small_cnn: the first)
        set_path(config, "model.widths", get_path(defaults, "model.widths"))


def merge(base: dict, over: dict) -> dict:
    """Deep merge of plain dicts (over wins); lists are replaced, not merged."""
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ------------------------------------------------------------------------------- relevance
# A field is shown only when it can matter for the config being built (its show_if holds); hidden
# fields keep their value.
def _test_holds(test, value) -> bool:
    if isinstance(test, dict):
        if "not" in test:
            return not _test_holds(test["not"], value)
        if "gt" in test:
            return isinstance(value, (int, float)) and value > test["gt"]
        if "set" in test:
            return (value is not None) == bool(test["set"])
        raise ValueError(f"unknown show_if test {test!r}")
    if isinstance(test, list):
        return any(v in test for v in (value if isinstance(value, list) else [value]))
    return value == test


def condition_holds(condition, config: dict) -> bool:
    """A show-if condition (engine.config.ShowIf) on a config dict."""
    if condition is None:
        return True
    if isinstance(condition, list):
        return any(condition_holds(c, config) for c in condition)
    return all(_test_holds(test, get_path(config, path)) for path, test in condition.items())


def is_relevant(spec: FieldSpec, config: dict) -> bool:
    return condition_holds(spec.show_if, config)


def model_name_options(source: str, current: str | None, catalogue: list[str] | None = None) -> list[str]:
    """Names offered for a model family: ours, or suggestions first then the library's catalogue."""
    if source == "custom":
        names = list(CUSTOM_MODELS)
    else:
        names = list(TIMM_SUGGESTIONS if source == "timm" else TORCHVISION_SUGGESTIONS)
        names += [n for n in (catalogue or []) if n not in names]
    if current and current not in names:
        names.insert(0, current)
    return names


# ------------------------------------------------------------------------------- errors
# Errors arrive as (dotted field, message): the schema locates even its cross-field rules.
def errors_by_section(errors: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for loc, msg in errors:
        out.setdefault(section_of(loc), []).append((loc, msg))
    return out


def without_fields(errors: list[tuple[str, str]], fields) -> list[tuple[str, str]]:
    """errors minus those on `fields` (a field the form already refuses is reported once)."""
    taken = set(fields)
    return [(f, m) for f, m in errors if f not in taken]


def field_label(path: str) -> str:
    spec = next((s for s in field_specs() if s.path == path), None)
    if spec is not None:
        return spec.label
    m = re.match(r"augment\.train\.(\d+)", path)
    if m:
        return f"Augmentation step {int(m.group(1)) + 1}"
    return path if path != "(root)" else "Config"


def split_errors(errors: list[tuple[str, str]], shown_paths: set[str]):
    """-> (errors per shown field path, the rest). A field owns errors on itself and its sub-paths
    (model.widths owns model.widths.2); augmentation steps own augment.train.<i>."""
    by_field: dict[str, list[str]] = {}
    rest: list[tuple[str, str]] = []
    for loc, msg in errors:
        owner = next(
            (p for p in sorted(shown_paths, key=len, reverse=True) if loc == p or loc.startswith(p + ".")), None
        )
        if owner is None:
            rest.append((loc, msg))
        else:
            by_field.setdefault(owner, []).append(msg)
    return by_field, rest


def summary_lines(errors: list[tuple[str, str]]) -> list[str]:
    """One markdown line per error: the section and field in bold, both (and the message) escaped, since a
    field path can be a key the user typed and a message can quote the value."""
    return [f"**{SECTION_TITLES[section_of(f)]} › {plain(field_label(f))}**: {plain(m)}" for f, m in errors]


# ------------------------------------------------------------------------------- run metadata & files
def parse_tags(text: str) -> list[str]:
    return [t.strip() for t in re.split(r"[,\n]", text or "") if t.strip()]


def config_yaml(config: dict) -> str | None:
    """YAML of a schema-valid config (what `python -m engine train x.yaml` reads), else None. Kept for
    the last configs seen: the builder and Run detail show it on every rerun, and parsing plus dumping
    costs tens of milliseconds."""
    return _config_yaml(json.dumps(config, sort_keys=True, default=str))


@functools.lru_cache(maxsize=64)
def _config_yaml(config_json: str) -> str | None:
    from engine.config import ConfigError, parse_config

    try:
        return parse_config(json.loads(config_json)).to_yaml()
    except ConfigError:
        return None


def config_from_upload(data: bytes) -> tuple[dict | None, list[tuple[str, str]]]:
    """An uploaded YAML/JSON file -> (config dict, []) or (None, errors)."""
    from engine.config import ConfigError, ExperimentConfig

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, [("(root)", "the file is not UTF-8 text")]
    try:
        cfg = ExperimentConfig.from_yaml(text)
    except ConfigError as exc:
        return None, exc.errors
    except yaml.YAMLError as exc:
        return None, [("(root)", f"not valid YAML/JSON: {str(exc).splitlines()[0]}")]
    return cfg.model_dump(mode="json"), []


# ------------------------------------------------------------------------------- presets
def available_presets() -> dict[str, str]:
    """name -> description, from control.presets when it exists (optional module)."""
    try:
        from control.presets import PRESETS
    except Exception:  # not there yet, or broken: the builder works without presets
        return {}
    return dict(PRESETS)


# How a choice reads in the builder where its config value is a code word; other values show as they are.
CHOICE_LABELS = {
    "loss.name": {"ce": "cross-entropy", "focal": "focal (down-weights easy images)", "poly1": "Poly-1 cross-entropy"},
    "optim.name": {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"},
    "schedule.name": {"none": "constant", "onecycle": "one-cycle", "multistep": "multi-step", "plateau": "on plateau"},
    "train.amp": {"off": "off (float32)", "bf16": "bfloat16", "fp16": "float16"},
    "loss.class_weights": {"inverse_frequency": "inverse frequency"},
    "schedule.plateau_metric": {"val_loss": "validation loss", "val_acc": "validation accuracy"},
    "regularize.early_stopping.metric": {"val_loss": "validation loss", "val_acc": "validation accuracy"},
    "eval.best_metric": {"val_loss": "validation loss", "val_acc": "validation accuracy"},
}


def choice_label(path: str):
    """format_func for the choice field at `path`."""
    labels = CHOICE_LABELS.get(path, {})
    return lambda value: labels.get(value, str(value))


def preset_order(presets: dict[str, str]) -> list[str]:
    """The fast general-purpose starts first, then the recipes written for one kind of data."""
    return sorted(presets, key=lambda n: not n.startswith("fast-"))


def preset(
    name: str, dataset: str, image_size: int | None = None, num_classes: int | None = None
) -> tuple[dict, list[str]]:
    """The preset's config for this dataset, and what it adapted (notes; empty when not provided)."""
    from control import presets

    config = presets.preset_config(name, dataset, image_size=image_size, num_classes=num_classes)
    notes_fn = getattr(presets, "preset_notes", None)
    notes = list(notes_fn(name, dataset, image_size=image_size, num_classes=num_classes)) if notes_fn else []
    return config, notes


def dataset_shape(summary: dict | None) -> tuple[int | None, int | None]:
    """(image side, number of classes) from a registered dataset's summary, where known."""
    summary = summary or {}
    shape = summary.get("image_shape") or [None]
    return (int(shape[0]) if shape[0] else None), summary.get("num_classes")


# ------------------------------------------------------------------------------- runs table filters
def filter_runs(df, statuses=None, datasets=None, text: str = "", tags=None):
    """Rows of db.queries.list_runs matching every given filter (empty filter = no constraint)."""
    if df is None or df.empty:
        return df
    mask = df["id"].notna()
    if statuses:
        mask &= df["status"].isin(statuses)
    if datasets:
        mask &= df["dataset"].isin(datasets)
    if tags:
        wanted = set(tags)
        mask &= df["tags"].apply(lambda t: bool(wanted & set(t or [])))
    text = (text or "").strip().lower()
    if text:
        hay = (
            df["id"].astype(str)
            + " "
            + df["name"].fillna("")
            + " "
            + df["model"].fillna("")
            + " "
            + df["dataset"].fillna("")
            + " "
            + df["notes"].fillna("")
            + " "
            + df["tags"].apply(lambda t: " ".join(t or []))
        ).str.lower()
        mask &= hay.str.contains(text, regex=False)
    return df[mask]


def config_summary(config: dict) -> str:
    """One line a person can scan: what data, which model, how it is trained."""
    g = lambda p, d=None: get_path(config, p, d)  # noqa: E731
    steps = [s.get("name", "?") for s in (g("augment.train") or [])]
    parts = [
        f"{g('data.dataset')}" + (f" @ {g('data.image_size')} px" if g("data.image_size") else ""),
        f"{g('model.source')}:{g('model.name')}" + (" (pretrained)" if g("model.pretrained") else ""),
        f"{g('optim.name')} lr {g('optim.lr'):g}"
        + (f", wd {g('optim.weight_decay'):g}" if g("optim.weight_decay") else ""),
        f"{g('schedule.name')} schedule" if g("schedule.name") != "none" else "constant LR",
        f"{g('train.epochs')} epochs × batch {g('train.batch_size')}",
        ("aug: " + " → ".join(steps)) if steps else "no augmentation",
    ]
    # then every other setting that differs from the defaults, found from the schema (two runs that differ
    # only in the loss, its class weights or the EMA never read the same)
    parts += [
        f"{short_setting_name(path)} {_setting_text(value)}"
        for path, value in non_default_settings(config).items()
        if path not in SUMMARY_HEADLINE
    ]
    return " · ".join(parts)


# Settings the summary's headline parts already say.
SUMMARY_HEADLINE = frozenset(
    {
        "name",
        "data.dataset",
        "data.image_size",
        "model.source",
        "model.name",
        "model.pretrained",
        "optim.name",
        "optim.lr",
        "optim.weight_decay",
        "schedule.name",
        "train.epochs",
        "train.batch_size",
        "augment.train",
    }
)


def _setting_text(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_setting_text(v) if not isinstance(v, dict) else json.dumps(v) for v in value) + "]"
    return "none" if value is None else str(value)


def available_backends() -> list[str]:
    """Launcher backends usable from here: the default first (LAB_BACKEND), Slurm only on a submit host."""
    import os
    import shutil

    backends = ["local"] + (["slurm"] if shutil.which("sbatch") else [])
    default = os.environ.get("LAB_BACKEND", "local")
    return sorted(backends, key=lambda b: b != default)
