"""After training: the test split scored with the chosen checkpoint, and any stored checkpoint scored on demand."""

from __future__ import annotations

from pathlib import Path

from engine.augment import build_pipeline
from engine.config import ExperimentConfig
from engine.data import DatasetSpec, load_arrays, make_splits
from engine.models import build_model
from engine.training import checkpoint as ckpt
from engine.training.evaluate import predict_probs, run_tta, summarize
from engine.training.run import Run, pick_device


def final_evaluation(run: Run) -> float:
    """Test (and validation) results of the eval.test_checkpoint weights, with TTA when configured."""
    cfg, splits, device, amp_dtype = run.cfg, run.splits, run.device, run.amp_dtype
    which = cfg.eval.test_checkpoint
    eval_model = run.eval_model
    epoch = None
    if which == "best" and (run.run_dir / "best.pt").exists():
        state = ckpt.load(run.run_dir / "best.pt")
        eval_model.load_state_dict(state["model"])
        epoch = state["epoch"]
    if epoch is None:
        epoch = ckpt.load(run.run_dir / "last.pt")["epoch"]
    t = cfg.train
    probs = predict_probs(
        eval_model, splits.test_x, splits.mean, splits.std, device, channels_last=t.channels_last, amp_dtype=amp_dtype
    )
    result = summarize(probs, splits.test_y, splits.num_classes)
    run.sink.on_evaluation("test", epoch, which, result)
    if len(splits.val_y):
        val = summarize(
            predict_probs(
                eval_model,
                splits.val_x,
                splits.mean,
                splits.std,
                device,
                channels_last=t.channels_last,
                amp_dtype=amp_dtype,
            ),
            splits.val_y,
            splits.num_classes,
        )
        run.sink.on_evaluation("val", epoch, which, val)
    if cfg.eval.tta:
        tta = run_tta(
            eval_model,
            splits.test_x,
            splits.test_y,
            splits.num_classes,
            cfg.eval.tta,
            splits.mean,
            splits.std,
            device,
            passes=cfg.eval.tta_passes,
            pipeline=run.pipeline,  # random-pass TTA uses the training augmentation
            seed=cfg.train.seed,
            channels_last=t.channels_last,
            amp_dtype=amp_dtype,
        )
        run.sink.on_tta("test", which, tta)
    return result["accuracy"]


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
        )
    return result, tta_results, int(state["epoch"])
