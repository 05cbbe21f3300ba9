"""Test-time augmentation and per-class metrics, on real digits and a real (small) model.

The model is a freshly initialised CIFAR ResNet: it is not symmetric under flips or rotations, so
any equality below comes from the TTA itself, not from the model."""

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import precision_recall_fscore_support

from engine.augment import build_pipeline
from engine.data import BUILTIN_SPECS, channel_stats, load_arrays
from engine.models import CifarResNet
from engine.training.evaluate import (
    combine_mean,
    combine_vote,
    per_class_metrics,
    predict_probs,
    random_passes,
    run_tta,
    summarize,
    tta_probabilities,
    tta_views,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    d = load_arrays(BUILTIN_SPECS["digits"])
    x, y = d.train_x[:120], d.train_y[:120]
    mean, std = channel_stats(x)
    return x, y, mean, std


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CifarResNet(1, 10, [8, 16], [1, 1]).eval()


def _probs(model, x, variant, mean, std, **kw):
    return tta_probabilities(model, x, variant, 10, mean, std, CPU, **kw)


def test_hflip_tta_on_hflip_symmetric_images_equals_no_tta(model, digits):
    x, _, mean, std = digits
    symmetric = np.concatenate([x[:, :, :4], x[:, :, :4][:, :, ::-1]], axis=2)  # mirror the left half
    assert np.array_equal(symmetric, symmetric[:, :, ::-1])
    assert torch.allclose(
        _probs(model, symmetric, "hflip", mean, std), _probs(model, symmetric, "none", mean, std), atol=1e-6
    )
    # ...and on ordinary digits it does change the prediction: the test can fail
    assert not torch.allclose(_probs(model, x, "hflip", mean, std), _probs(model, x, "none", mean, std), atol=1e-4)


@pytest.mark.parametrize(
    "variant,n_views,transforms",
    [
        ("none", 1, []),
        ("hflip", 2, [lambda a: a[:, :, ::-1]]),
        ("vflip", 2, [lambda a: a[:, ::-1]]),
        ("rot90", 4, [lambda a: np.rot90(a, 1, axes=(1, 2))]),
        ("dihedral8", 8, [lambda a: np.rot90(a, 1, axes=(1, 2)), lambda a: a[:, :, ::-1], lambda a: a[:, ::-1]]),
    ],
)
def test_tta_view_sets_and_the_invariance_they_buy(model, digits, variant, n_views, transforms):
    x, _, mean, std = digits
    views = tta_views(variant, 8, 8)
    assert len(views) == n_views
    img = torch.from_numpy(x[:1])
    outs = {v(img).numpy().tobytes() for v in views}
    assert len(outs) == n_views  # all views differ on an asymmetric digit (dihedral8 is the full group)
    base = _probs(model, x, variant, mean, std)
    for t in transforms:  # averaging over a group makes the prediction invariant under each of its elements
        assert torch.allclose(_probs(model, np.ascontiguousarray(t(x)), variant, mean, std), base, atol=1e-5)


def test_non_square_images_use_only_size_preserving_views():
    assert len(tta_views("rot90", 8, 12)) == 2
    assert len(tta_views("dihedral8", 8, 12)) == 4
    img = torch.zeros(1, 8, 12, 1, dtype=torch.uint8)
    assert all(v(img).shape == img.shape for v in tta_views("dihedral8", 8, 12) + tta_views("multicrop", 8, 12))


def test_multicrop_is_five_same_size_crops_with_the_centre_as_identity(digits):
    x, *_ = digits
    img = torch.from_numpy(x[:4])
    views = tta_views("multicrop", 8, 8)
    assert len(views) == 5
    assert torch.equal(views[0](img), img)
    assert all(v(img).shape == img.shape for v in views)
    assert sum(not torch.equal(v(img), img) for v in views[1:]) == 4  # corners are shifted


def test_vote_and_mean_combine_passes_differently():
    # pass 1 is very sure of class 0; passes 2 and 3 lean a little to class 1
    runs = [torch.tensor([[0.95, 0.05]]), torch.tensor([[0.45, 0.55]]), torch.tensor([[0.45, 0.55]])]
    assert combine_mean(runs).argmax(1).item() == 0
    assert combine_vote(runs, 2).argmax(1).item() == 1  # two votes against one
    assert torch.allclose(combine_vote(runs, 2).sum(1), torch.ones(1))
    tie = [torch.tensor([[0.9, 0.1]]), torch.tensor([[0.4, 0.6]])]
    assert combine_vote(tie, 2).argmax(1).item() == 0  # a tie goes to the higher mean probability


def test_random_pass_tta_uses_the_augmentation_passes_and_is_reproducible(model, digits):
    x, y, mean, std = digits
    pipeline = build_pipeline(
        [
            {"name": "Affine", "p": 1.0, "params": {"translate_percent": [-0.25, 0.25]}},
            {"name": "HorizontalFlip", "p": 0.5},
        ],
        8,
    )
    runs = random_passes(model, x, pipeline, 4, 7, mean, std, CPU)
    assert len(runs) == 4 and not torch.allclose(runs[0], runs[1])  # each pass is a fresh draw
    mean_p = _probs(model, x, "random_mean", mean, std, passes=4, pipeline=pipeline, seed=7)
    vote_p = _probs(model, x, "random_vote", mean, std, passes=4, pipeline=pipeline, seed=7)
    assert torch.allclose(mean_p, combine_mean(runs))
    votes = torch.stack([r.argmax(1) for r in runs])  # (passes, N)
    counts = torch.nn.functional.one_hot(votes, 10).sum(0)
    assert torch.all(counts.gather(1, vote_p.argmax(1, keepdim=True)).squeeze(1) == counts.max(1).values)
    assert torch.allclose(_probs(model, x, "random_mean", mean, std, passes=4, pipeline=pipeline, seed=7), mean_p)
    assert not torch.allclose(_probs(model, x, "random_mean", mean, std, passes=4, pipeline=pipeline, seed=8), mean_p)


def test_run_tta_reports_each_variant_with_per_class_metrics(model, digits):
    x, y, mean, std = digits
    variants = ["none", "hflip", "vflip", "rot90", "dihedral8", "multicrop", "random_mean", "random_vote"]
    pipeline = build_pipeline([{"name": "HorizontalFlip", "p": 0.5}], 8)
    res = run_tta(model, x, y, 10, variants, mean, std, CPU, passes=3, pipeline=pipeline)
    assert list(res) == variants
    plain = summarize(predict_probs(model, x, mean, std, CPU), y, 10)
    assert res["none"]["accuracy"] == pytest.approx(plain["accuracy"])
    for v in variants:
        pc = res[v]["per_class"]
        assert set(pc) >= {"accuracy", "precision", "recall", "f1"} and all(len(pc[k]) == 10 for k in pc)


def test_per_class_precision_recall_f1_and_confusion_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 500)
    probs = torch.softmax(
        torch.from_numpy(rng.normal(size=(500, 6))).float() + 2 * torch.nn.functional.one_hot(torch.from_numpy(y), 6), 1
    )
    probs[:, 5] = 0  # class 5 is never predicted: its precision is 0 by convention (sklearn zero_division=0)
    pred = probs.argmax(1).numpy()
    s = summarize(probs, y, 6)
    assert np.array_equal(np.array(s["confusion"]), sk_confusion(y, pred, labels=range(6)))
    p, r, f, support = precision_recall_fscore_support(y, pred, labels=range(6), zero_division=0)
    pc = per_class_metrics(np.array(s["confusion"]))
    assert np.allclose(pc["precision"], p) and np.allclose(pc["recall"], r) and np.allclose(pc["f1"], f)
    assert pc["support"] == support.tolist()
    assert s["accuracy"] == pytest.approx((pred == y).mean())


def test_random_pass_tta_needs_a_training_augmentation():
    from engine.config import ConfigError, parse_config
    from tests.conftest import tiny_config

    with pytest.raises(ConfigError, match="augment.train is empty"):
        parse_config(tiny_config(**{"eval.tta": ["none", "random_vote"]}))
    parse_config(tiny_config(**{"eval.tta": ["none", "random_vote"], "augment.train": [{"name": "HorizontalFlip"}]}))
