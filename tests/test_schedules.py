"""LR schedules and optimizers: our trajectories equal torch's own schedulers stepped on a dummy optimizer."""

import pytest
import torch
from torch.optim import lr_scheduler as S

from engine.config import ScheduleConfig, parse_config
from engine.training.loop import lr_trajectory
from engine.training.optim import EpochSchedule, build_optimizer, param_groups
from tests.conftest import tiny_config

LR = 0.1


def _torch_lrs(make, epochs, metrics=None):
    """The LR torch's scheduler gives each epoch (read before the epoch's step, as a training loop uses it)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sched = make(opt)
    out = []
    for e in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(metrics[e]) if metrics is not None else sched.step()
    return out


def _ours(epochs, **schedule):
    cfg = parse_config(tiny_config(**{"train.epochs": epochs, "optim.lr": LR, "schedule": schedule}))
    return lr_trajectory(cfg)


CASES = [
    (
        "cosine default T_max",
        {"name": "cosine", "eta_min": 0.001},
        12,
        lambda o: S.CosineAnnealingLR(o, T_max=12, eta_min=0.001),
    ),
    (
        "cosine T_max shorter than the run (rises again, like torch)",
        {"name": "cosine", "t_max": 4},
        12,
        lambda o: S.CosineAnnealingLR(o, T_max=4),
    ),
    (
        "warmup + cosine",
        {"name": "cosine", "warmup_epochs": 3, "warmup_start_factor": 0.1, "eta_min": 0.002},
        12,
        lambda o: S.SequentialLR(
            o,
            [S.LinearLR(o, start_factor=0.1, total_iters=3), S.CosineAnnealingLR(o, T_max=9, eta_min=0.002)],
            milestones=[3],
        ),
    ),
    (
        "multistep",
        {"name": "multistep", "milestones": [3, 7], "gamma": 0.1},
        10,
        lambda o: S.MultiStepLR(o, milestones=[3, 7], gamma=0.1),
    ),
    (
        "warmup + multistep",
        {"name": "multistep", "milestones": [3, 5], "gamma": 0.5, "warmup_epochs": 2},
        10,
        lambda o: S.SequentialLR(
            o,
            [S.LinearLR(o, start_factor=0.1, total_iters=2), S.MultiStepLR(o, milestones=[3, 5], gamma=0.5)],
            milestones=[2],
        ),
    ),
    ("step", {"name": "step", "step_size": 3, "gamma": 0.5}, 10, lambda o: S.StepLR(o, step_size=3, gamma=0.5)),
    ("none", {"name": "none"}, 5, lambda o: S.ConstantLR(o, factor=1.0)),
]


@pytest.mark.parametrize("label,schedule,epochs,make", CASES, ids=[c[0] for c in CASES])
def test_epoch_schedules_match_torch(label, schedule, epochs, make):
    assert _ours(epochs, **schedule) == pytest.approx(_torch_lrs(make, epochs), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    "metric,mode,values",
    [
        ("val_loss", "min", [1.0, 0.9, 0.9, 0.95, 0.91, 0.92, 0.8, 0.79995, 0.85, 0.85, 0.85, 0.85, 0.85, 0.7, 0.9]),
        ("val_acc", "max", [0.5, 0.6, 0.6, 0.55, 0.6, 0.6, 0.7, 0.70001, 0.69, 0.69, 0.69, 0.8, 0.8, 0.8, 0.8]),
    ],
)
def test_reduce_on_plateau_matches_torch_patience_cooldown_threshold(metric, mode, values):
    cfg = ScheduleConfig(
        name="plateau", plateau_metric=metric, plateau_patience=1, plateau_cooldown=2, plateau_factor=0.5
    )
    sched = EpochSchedule(cfg, len(values)).attach(LR)
    ours = []
    for e, v in enumerate(values):
        ours.append(LR * sched.factor(e))
        sched.observe({metric: v})
    ref = _torch_lrs(
        lambda o: S.ReduceLROnPlateau(o, mode=mode, factor=0.5, patience=1, cooldown=2), len(values), values
    )
    assert ours == pytest.approx(ref, rel=1e-12)
    assert min(ours) < LR  # the sequence does trigger reductions


def test_plateau_state_survives_a_checkpoint_round_trip():
    cfg = ScheduleConfig(name="plateau", plateau_patience=0, plateau_factor=0.1)
    a = EpochSchedule(cfg, 10)
    for v in (1.0, 1.1):
        a.observe({"val_loss": v})
    b = EpochSchedule(cfg, 10)
    b.load_state_dict(a.state_dict())
    assert b.factor(2) == a.factor(2) == pytest.approx(0.1)


@pytest.mark.parametrize("epochs,steps,pct", [(5, 7, 0.3), (3, 10, 0.25)])
def test_one_cycle_per_step_matches_torch(epochs, steps, pct):
    sched = EpochSchedule(ScheduleConfig(name="onecycle", onecycle_pct_start=pct), epochs, steps)
    ours = [LR * sched.factor(e, s) for e in range(epochs) for s in range(steps)]
    ref = _torch_lrs(
        lambda o: S.OneCycleLR(o, max_lr=LR, total_steps=epochs * steps, pct_start=pct, cycle_momentum=False),
        epochs * steps,
    )
    assert ours == pytest.approx(ref, rel=1e-9)
    assert max(ours) == pytest.approx(LR, rel=0.01) and ours[0] == pytest.approx(LR / 25)
    assert ours[-1] == pytest.approx(LR / 25 / 1e4)  # final_div_factor: ends far below the start


def test_the_training_loop_applies_the_schedule_it_previews(tmp_path):
    from engine.data import BUILTIN_SPECS
    from engine.sinks import EventSink
    from engine.training.loop import train

    class LRs(EventSink):
        values = []

        def on_epoch_end(self, epoch, metrics, confusion):
            self.values.append(metrics[("train", "lr")])

    cfg = parse_config(
        tiny_config(
            **{
                "train.epochs": 4,
                "train.max_steps_per_epoch": 1,
                "optim.lr": LR,
                "schedule": {
                    "name": "multistep",
                    "milestones": [1, 3],
                    "gamma": 0.5,
                    "warmup_epochs": 1,
                    "warmup_start_factor": 0.2,
                },
            }
        )
    )
    sink = LRs()
    assert train(cfg, BUILTIN_SPECS["digits"], tmp_path, sink).status == "completed"
    assert lr_trajectory(cfg) == pytest.approx([0.02, 0.1, 0.05, 0.05])  # milestones count after the warmup
    assert sink.values == pytest.approx(lr_trajectory(cfg))


def test_onecycle_refuses_an_extra_warmup():
    from engine.config import ConfigError

    with pytest.raises(ConfigError, match="schedule"):
        parse_config(tiny_config(**{"schedule": {"name": "onecycle", "warmup_epochs": 1}}))


# ------------------------------------------------------------------------------ optimizers
@pytest.mark.parametrize(
    "name,cls,extra",
    [
        ("sgd", torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
        ("adam", torch.optim.Adam, {"betas": (0.8, 0.99)}),
        ("adamw", torch.optim.AdamW, {"betas": (0.9, 0.95)}),
        ("rmsprop", torch.optim.RMSprop, {"momentum": 0.5}),
    ],
)
def test_optimizers_by_name_with_their_settings(name, cls, extra):
    from engine.models import build_model

    cfg = parse_config(
        tiny_config(
            **{
                "optim": {"name": name, "lr": 0.05, "weight_decay": 0.01, **extra},
                "model.widths": [8],
                "model.backbone_lr_mult": 0.1,
            }
        )
    )
    model = build_model(cfg.model, 1, 10)
    opt = build_optimizer(cfg.optim, model, cfg.model.backbone_lr_mult)
    assert type(opt) is cls
    for k, v in extra.items():
        assert all(g[k] == (tuple(v) if isinstance(v, tuple) else v) for g in opt.param_groups), k
    head_ids = {id(p) for n, p in model.named_parameters() if n.startswith("head.")}
    for g in opt.param_groups:
        is_head = all(id(p) in head_ids for p in g["params"])
        assert g["lr"] == pytest.approx(0.05 if is_head else 0.005)  # separate head / backbone LR
        # weight decay on conv/linear weights only, never on norms and biases
        assert g["weight_decay"] == (0.01 if all(p.ndim > 1 for p in g["params"]) else 0.0)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_param_groups_keep_the_head_backbone_ratio_under_a_schedule():
    from engine.models import build_model
    from engine.training.optim import set_lr

    cfg = parse_config(tiny_config(**{"model.widths": [8], "model.backbone_lr_mult": 0.25}))
    model = build_model(cfg.model, 1, 10)
    opt = torch.optim.SGD(param_groups(model, 0.4, 0.25, 0.0), lr=0.4)
    set_lr(opt, 0.4, 0.5)
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([0.05, 0.2])
