"""Bad input, property-based: random and malformed configs (wrong types, missing sections, huge
numbers, unicode, extra keys, nested garbage in augmentation params, broken cross-field rules) must
always end in a clean validation error (ConfigError / LaunchRefused with (field, message) pairs) or
a valid config, never a traceback; and a refused config launches nothing (no run row). Config
strings are never evaluated as code; dataset paths are checked before use."""

from __future__ import annotations

import copy
import io
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from control.launcher import LaunchRefused, bootstrap, launch_run
from db import queries
from engine.config import ConfigError, ExperimentConfig, parse_config
from tests import attack_tally
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
TALLY = {
    "tried": 0,
    "refused_cleanly": 0,
    "accepted": 0,
    "parse_tried": 0,
    "parse_handled": 0,
    "parse_refused": 0,
    "cli_tried": 0,
    "cli_refused": 0,
    "cli_valid": 0,
}
FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    """One migrated SQLite file for all examples (hypothesis reruns the test body, not the fixture)."""
    return bootstrap(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'lab.db'}")


def _leaf_paths(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        path = f"{prefix}.{k}" if prefix else k
        out += _leaf_paths(v, path) if isinstance(v, dict) and v else [path]
    return out


LEAVES = _leaf_paths(ExperimentConfig().model_dump(mode="json"))
SECTIONS = [k for k, v in ExperimentConfig().model_dump(mode="json").items() if isinstance(v, dict)]

HUGE = st.sampled_from(
    [2**31, 2**63, 2**64 + 1, 10**30, -(10**30), 1e308, -1e308, float("inf"), float("-inf"), float("nan"), 1e-320]
)
UNICODE = st.text(min_size=0, max_size=12) | st.sampled_from(
    ["", " ", "\x00", "é", "🙂", "\u202e", "日本語", "\ud800", "../../etc/passwd", "__import__('os').system('id')"]
)
SCALAR = st.none() | st.booleans() | st.integers() | HUGE | st.floats() | UNICODE
GARBAGE = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(UNICODE, inner, max_size=4), max_leaves=10
)
STEP_NAMES = (
    st.sampled_from(
        [
            "HorizontalFlip",
            "PadRandomCrop",
            "RandAugment",
            "Affine",
            "CoarseDropout",
            "Normalize",
            "Lambda",
            "Compose",
            "__class__",
            "_private",
            "NoSuchTransform",
        ]
    )
    | UNICODE
)


def _set(cfg: dict, dotted: str, value) -> None:
    node = cfg
    *parents, leaf = dotted.split(".")
    for p in parents:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[leaf] = value


@st.composite
def malformed_configs(draw):
    """A valid tiny config broken in one to three ways, or pure garbage."""
    if draw(st.integers(0, 9)) == 0:
        return draw(GARBAGE)  # not even a mapping, or a mapping of nonsense
    cfg = copy.deepcopy(tiny_config(**{"train.epochs": 2}))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["leaf", "leaf", "huge", "section", "extra", "augment", "cross"]))
        if kind == "leaf":
            _set(cfg, draw(st.sampled_from(LEAVES)), draw(GARBAGE))
        elif kind == "huge":
            _set(cfg, draw(st.sampled_from(LEAVES)), draw(HUGE))
        elif kind == "section":
            section = draw(st.sampled_from(SECTIONS))
            if draw(st.booleans()):
                cfg.pop(section, None)  # a missing section falls back to its defaults: may be valid
            else:
                cfg[section] = draw(GARBAGE)
        elif kind == "extra":
            where = draw(st.sampled_from(["", *SECTIONS]))
            _set(cfg, f"{where}.{draw(UNICODE)}" if where else draw(UNICODE) or "x", draw(GARBAGE))
        elif kind == "augment":
            steps = draw(
                st.lists(
                    st.fixed_dictionaries(
                        {"name": STEP_NAMES},
                        optional={
                            "p": SCALAR,
                            "params": st.dictionaries(UNICODE, GARBAGE, max_size=3) | GARBAGE,
                            draw(UNICODE) or "extra": GARBAGE,
                        },
                    ),
                    max_size=3,
                )
            )
            _set(cfg, "augment.train", steps)
        else:
            _set(
                cfg,
                *draw(
                    st.sampled_from(
                        [
                            ("schedule.milestones", [1, 5]),
                            ("schedule.warmup_epochs", 2),
                            ("train.batch_size", 100000),
                            ("optim.nesterov", True),
                            ("model.pretrained", True),
                            ("data.fold", 7),
                            ("optim.switch_to_sgd_epoch", 2),
                            ("loss.focal_alpha", [0.5] * 3),
                            ("train.init_from_run", 999),
                            ("data.dataset", "imagefolder:/nonexistent"),
                            ("model.name", "resnet999"),
                            ("train.amp", "fp16"),
                        ]
                    )
                ),
            )
            if draw(st.booleans()):
                _set(cfg, "train.device", "cpu")
    return cfg


def _check_errors(errors) -> None:
    assert errors, "a refusal must say why"
    for field, message in errors:
        assert isinstance(field, str) and field and isinstance(message, str) and message
        assert "Traceback" not in message


@FUZZ
@given(cfg=malformed_configs())
def test_malformed_configs_are_refused_cleanly_and_launch_nothing(url, cfg):
    before = len(queries.list_runs(url))
    TALLY["tried"] += 1
    try:
        run_id = launch_run(url, cfg, start=False)  # start=False: a config that turns out valid only queues
    except LaunchRefused as exc:
        TALLY["refused_cleanly"] += 1
        _check_errors(exc.errors)
        assert len(queries.list_runs(url)) == before  # refused: no run row
        return
    TALLY["accepted"] += 1
    assert queries.get_run(url, run_id)["status"] == "queued"
    parse_config(queries.get_run(url, run_id)["config"])  # what was stored is itself valid


@FUZZ
@given(raw=GARBAGE | malformed_configs())
def test_parse_config_answers_with_config_error_or_a_config(raw):
    TALLY["parse_tried"] += 1
    try:
        cfg = parse_config(raw)
    except ConfigError as exc:
        TALLY["parse_refused"] += 1
        _check_errors(exc.errors)
        assert set(exc.by_field()) <= {f for f, _ in exc.errors}
    else:
        assert isinstance(cfg, ExperimentConfig)
        assert parse_config(cfg.model_dump(mode="json")) == cfg  # round-trips through the DB's JSON
    TALLY["parse_handled"] += 1


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@example(text="' ':")  # an extra key that is a space once printed " : Extra inputs..."
@given(
    text=st.text(max_size=200)
    | GARBAGE.map(lambda g: yaml.safe_dump(g, allow_unicode=True))
    | malformed_configs().map(lambda c: yaml.safe_dump(c, allow_unicode=True))
)
def test_cli_validate_and_train_exit_2_with_messages_on_any_file(url, tmp_path_factory, text):
    """The CLI's own main(), in process (test_cli.py runs the real `python -m engine` on a few)."""
    from control.cli import main

    path = tmp_path_factory.mktemp("cfg") / "bad.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    before = len(queries.list_runs(url))
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["validate", str(path), "--db", url])
    assert code in (0, 2), err.getvalue()
    TALLY["cli_tried"] += 1
    if code == 0:
        TALLY["cli_valid"] += 1
        return  # a valid config: training it is test_cli's business
    lines = err.getvalue().strip().splitlines()
    assert lines and all(re.match(r"^\S.*?: \S", line) for line in lines), err.getvalue()  # "field: message"
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        assert main(["train", str(path), "--db", url]) == 2
    assert len(queries.list_runs(url)) == before
    TALLY["cli_refused"] += 1


def test_fuzz_tally(url):
    """How many fuzzed configs were tried and refused, printed (run after the fuzz tests in this module)."""
    if TALLY["tried"]:
        print(
            f"\nconfig fuzz: launch_run {TALLY['tried']} tried, {TALLY['refused_cleanly']} refused cleanly, "
            f"{TALLY['accepted']} valid and queued; parse_config {TALLY['parse_tried']} tried, "
            f"{TALLY['parse_refused']} refused; CLI files {TALLY['cli_tried']} tried, {TALLY['cli_refused']} refused "
            f"(exit 2, no run row), {TALLY['cli_valid']} valid; 0 tracebacks"
        )
        handled = TALLY["refused_cleanly"] + TALLY["accepted"]
        attack_tally.cases(
            "fuzzed configs",
            TALLY["tried"] + TALLY["parse_tried"] + TALLY["cli_tried"],
            handled + TALLY["parse_handled"] + TALLY["cli_valid"] + TALLY["cli_refused"],
        )
        assert handled == TALLY["tried"]
        assert TALLY["refused_cleanly"] > TALLY["tried"] // 2


# ---------------------------------------------------------------------------------- targeted cases
def _schema_fields(model, prefix=""):
    import types
    import typing

    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        ann = field.annotation
        args = typing.get_args(ann) if typing.get_origin(ann) in (typing.Union, types.UnionType) else (ann,)
        for arg in args:
            inner = typing.get_args(arg)  # list[Step] -> Step
            for cand in (arg, *inner):
                if isinstance(cand, type) and issubclass(cand, BaseModel):
                    yield from _schema_fields(cand, f"{prefix}{name}.")
                    break
            else:
                continue
            break
        else:
            yield f"{prefix}{name}", args, field.metadata


def test_every_number_has_a_range_and_every_string_and_list_a_maximum_length():
    import annotated_types as at

    # Checked by validators instead: params are plain data of bounded size and depth, then the
    # transform's own schema (engine.augment); betas are each in [0, 1).
    by_validator = {"augment.train.params", "optim.betas"}
    unbounded = []
    for path, types, meta in _schema_fields(ExperimentConfig):
        if path in by_validator:
            continue
        kinds = {getattr(t, "__origin__", t) for t in types} - {type(None)}
        if kinds & {int, float}:
            if not (
                any(isinstance(m, (at.Ge, at.Gt)) for m in meta) and any(isinstance(m, (at.Le, at.Lt)) for m in meta)
            ):
                unbounded.append(path)
        elif kinds & {str, list}:
            if not any(isinstance(m, at.MaxLen) for m in meta):
                unbounded.append(path)
    assert unbounded == [], f"fields without a range / maximum length: {unbounded}"


@pytest.mark.parametrize(
    "field, value, where",
    [
        ("train.init_from_run", 2**63, "train.init_from_run"),
        ("data.max_train_samples", 10**30, "data.max_train_samples"),
        ("schedule.step_size", 10**30, "schedule.step_size"),
        ("regularize.early_stopping.min_delta", float("inf"), "regularize.early_stopping.min_delta"),
        ("model.weights_path", "x" * 10000, "model.weights_path"),
        ("eval.tta", ["none"] * 1000, "eval.tta"),
    ],
)
@pytest.mark.attack("fuzzed configs")
def test_unbounded_fields_have_ranges(url, field, value, where):
    with pytest.raises(LaunchRefused) as exc:
        launch_run(url, tiny_config(**{field: value}), start=False)
    assert where in {f for f, _ in exc.value.errors}


@pytest.mark.parametrize(
    "dataset, message",
    [
        ("imagefolder:/nonexistent/folder", "image folder not found"),
        ("npz:/nonexistent.npz", ".npz file not found"),
        ("csv:/", "CSV file not found"),
        ("imagefolder:\x00/etc", "image folder not found"),
        ("hdf5:" + __file__, "file signature not found"),  # a file of the wrong kind
        ("no_such_dataset", "no dataset named 'no_such_dataset' is registered"),
    ],
)
@pytest.mark.attack("dataset inputs")
def test_dataset_paths_are_checked_before_use(url, dataset, message):
    with pytest.raises(LaunchRefused) as exc:
        launch_run(url, tiny_config(**{"data.dataset": dataset}), start=False)
    errors = dict(exc.value.errors)
    assert list(errors) == ["data.dataset"] and message in errors["data.dataset"], errors


@pytest.mark.attack("fuzzed configs")
def test_config_strings_are_never_evaluated_as_code(url, tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    attempts = [
        {"name": payload},
        {"data.dataset": payload},
        {"model.name": payload},
        {"augment.train": [{"name": payload}]},
        {"augment.train": [{"name": "HorizontalFlip", "params": {"p2": payload}}]},
        {"augment.train": [{"name": "Lambda", "params": {"image": payload}}]},
        {"model.weights_path": payload, "model.pretrained": True, "model.source": "timm"},
    ]
    for overrides in attempts:
        try:
            launch_run(url, tiny_config(**overrides), start=False)
        except LaunchRefused:
            pass
    (tmp_path / "evil.yaml").write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    from control.cli import main

    with redirect_stderr(io.StringIO()) as err:
        assert main(["validate", str(tmp_path / "evil.yaml"), "--db", url]) == 2
    assert err.getvalue().startswith("config: cannot parse")
    assert not marker.exists()


def test_no_code_evaluation_or_unsafe_loading_in_the_source():
    """A guard on the code itself: the usual ways a string or a file becomes code."""
    unsafe = re.compile(
        r"(?<![.\w])(eval|exec)\(|yaml\.load\(|yaml\.unsafe_load|pickle\.loads?\(|weights_only\s*=\s*False"
        r"|shell\s*=\s*True|allow_pickle\s*=\s*True|os\.system\("
    )
    hits = []
    for folder in ("engine", "db", "dashboard"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if unsafe.search(line) and not line.lstrip().startswith("#"):
                    hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)
