"""After training: the test split scored with the chosen checkpoint, and any stored checkpoint scored on demand."""

from __future__ import annotations

import time
from pathlib import Path

from engine.augment import build_pipeline
from engine.config import ExperimentConfig
from engine.data import DatasetSpec, load_arrays, make_splits
from engine.models import build_model
from engine.training import checkpoint as ckpt
from engine.training.evaluate import eval_batch_size, predict_probs, run_tta, summarize, tta_set_of
from engine.training.live import batches
from engine.training.run import Run, pick_device


def final_evaluation(run: Run) -> float:
    """Test and validation results of the eval.test_checkpoint weights, with TTA when configured. Each
    split is predicted once: validation reuses that epoch's own predictions when it has them, and the
    plain TTA view ("none") is the test prediction itself."""
    cfg, s, sink = run.cfg, run.splits, run.sink
    which = cfg.eval.test_checkpoint
    model, epoch = _evaluated_weights(run, which)
    started = time.perf_counter()
    test_probs = _predict(run, model, s.test_x, "test")
    test_seconds = time.perf_counter() - started  # the plain view's cost, for TTA's cost and benefit
    result = summarize(test_probs, s.test_y, s.num_classes)
    sink.on_evaluation("test", epoch, which, result)
    if len(s.val_y):
        val_probs = run.val_probs.get(epoch)
        if val_probs is None:
            val_probs = _predict(run, model, s.val_x, "val")
        sink.on_evaluation("val", epoch, which, summarize(val_probs, s.val_y, s.num_classes))
    tta_set = tta_set_of(cfg.eval)
    if cfg.eval.tta or tta_set:
        tta = run_tta(
            model,
            s.test_x,
            s.test_y,
            s.num_classes,
            list(cfg.eval.tta) + ([tta_set["name"]] if tta_set else []),
            s.mean,
            s.std,
            run.device,
            passes=cfg.eval.tta_passes,
            # random-pass TTA uses the training augmentation (built only then: none on the fast path)
            pipeline=run.pipeline if {"random_mean", "random_vote"} & set(cfg.eval.tta) else None,
            seed=cfg.train.seed,
            channels_last=cfg.train.channels_last,
            amp_dtype=run.amp_dtype,
            known={"none": test_probs},
            tta_set=tta_set,
            known_seconds={"none": test_seconds},
            progress=run.live,
        )
        sink.on_tta("test", which, tta)
    return result["accuracy"]


def _evaluated_weights(run: Run, which: str):
    """The model holding the `which` checkpoint's weights, and that checkpoint's epoch."""
    model = run.eval_model
    if which == "best" and (run.run_dir / "best.pt").exists():
        state = ckpt.load(run.run_dir / "best.pt")
        model.load_state_dict(state["model"])
        return model, state["epoch"]
    return model, run.progress.epoch  # the weights in memory are the last epoch's


def _predict(run: Run, model, x, phase: str):
    t, s = run.cfg.train, run.splits
    run.live.phase(phase, batches(len(x), eval_batch_size(run.device)))
    return predict_probs(
        model,
        x,
        s.mean,
        s.std,
        run.device,
        channels_last=t.channels_last,
        amp_dtype=run.amp_dtype,
        on_batch=run.live.advance,
    )


def evaluate_checkpoint(
    path: str | Path, spec: DatasetSpec, split: str = "test", device_name: str = "auto", tta: list[str] | None = None
) -> tuple[dict, dict | None, int]:
    """Evaluate any stored checkpoint on a split: an earlier epoch can test better than the last or best one."""
    state = ckpt.load(path)
    cfg = ExperimentConfig.model_validate_json(state["config"])
    device = pick_device(device_name)
    splits = make_splits(load_arrays(spec), cfg.data)
    # the checkpoint holds the weights: build the bare architecture (no download of pretrained weights)
    model = build_model(cfg.model.model_copy(update={"pretrained": False}), splits.channels, splits.num_classes)
    ema_weights = state.get("ema") if cfg.regularize.ema.evaluate_ema else None  # epoch/last checkpoints keep both
    model.load_state_dict(ema_weights if ema_weights is not None else state["model"])
    model.to(device)
    x, y = (splits.test_x, splits.test_y) if split == "test" else (splits.val_x, splits.val_y)
    result = summarize(predict_probs(model, x, state["mean"], state["std"], device), y, splits.num_classes)
    tta_results = None
    if tta:
        pipeline = build_pipeline(cfg.augment.train, splits.image_size)
        tta_results = run_tta(
            model,
            x,
            y,
            splits.num_classes,
            tta,
            state["mean"],
            state["std"],
            device,
            passes=cfg.eval.tta_passes,
            pipeline=pipeline,
            seed=cfg.train.seed,
            tta_set=tta_set_of(cfg.eval),
        )
    return result, tta_results, int(state["epoch"])
