"""docs/catalogue.md names every setting: each leaf field of ExperimentConfig appears there by its dotted path."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from engine.config import ExperimentConfig

CATALOGUE = Path(__file__).resolve().parents[1] / "docs" / "catalogue.md"
SECTIONS = tuple(n for n, f in ExperimentConfig.model_fields.items() if isinstance(f.default_factory, type))
TOP_LEVEL = tuple(n for n in ExperimentConfig.model_fields if n not in SECTIONS)  # e.g. the run's name


def leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of every field that is not itself a section (lists of steps are one leaf)."""
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        nested = [t for t in (ann, *typing.get_args(ann)) if isinstance(t, type) and issubclass(t, BaseModel)]
        if nested and typing.get_origin(ann) is not list:
            out += leaf_paths(nested[0], f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def documented(text: str) -> tuple[set[str], list[str]]:
    """(paths named in `code`, prefixes of wildcards such as `augment.mixup.*` or `schedule.plateau_*`).
    `a.b.x/y/z` names a.b.x, a.b.y and a.b.z; `a.b[].c` names a.b; a value after `:` is ignored."""
    names, prefixes = set(), []
    for span in re.findall(r"`([^`]+)`", text):
        for token in re.split(r"[\s,]+", span.split(":")[0]):
            if token in TOP_LEVEL:
                names.add(token)
                continue
            if not token.startswith(tuple(f"{s}." for s in SECTIONS)):
                continue
            token = token.split("[]")[0]
            head, *alternatives = token.split("/")
            parent = head.rsplit(".", 1)[0]
            for path in (head, *(f"{parent}.{alt}" for alt in alternatives)):
                if path.endswith("*"):
                    prefixes.append(path.rstrip("*"))
                else:
                    names.add(path)
    return names, prefixes


def test_every_config_field_is_in_the_catalogue():
    names, prefixes = documented(CATALOGUE.read_text(encoding="utf-8"))
    leaves = leaf_paths(ExperimentConfig)
    assert len(leaves) > 100 and "augment.mixup.cutmix_alpha" in leaves and "augment.train" in leaves
    missing = [p for p in leaves if p not in names and not any(p.startswith(x) for x in prefixes)]
    assert missing == [], f"add these fields to docs/catalogue.md: {missing}"


def test_the_parser_reads_the_catalogues_ways_of_naming_fields():
    names, prefixes = documented(
        "`model.source: timm`, `regularize.ema.enabled/decay`, `augment.train[].name/params/p`, "
        "`augment.mixup.*`, `train.epochs`, `name` and `runs.facts.ema`"
    )
    assert names == {
        "model.source",
        "regularize.ema.enabled",
        "regularize.ema.decay",
        "augment.train",
        "train.epochs",
        "name",
    }
    assert prefixes == ["augment.mixup."]
