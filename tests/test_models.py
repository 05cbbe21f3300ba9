"""Models: library models by name, the small-image stem, heads, the CIFAR ResNet family, freezing, weights.

Each test checks what the technique does to real modules (feature-map sizes, which tensors change,
what eval mode computes), not only that a forward pass runs."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine.config import ModelConfig
from engine.data import BUILTIN_SPECS, load_arrays
from engine.models import (
    BasicBlock,
    CifarResNet,
    ModelError,
    ShakeDropFn,
    SqueezeExcite,
    apply_small_stem,
    backbone_parameters,
    build_model,
    drop_path,
    head_parameters,
    pretrained_cached,
    set_frozen,
)

X32 = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))


def _model(**kw) -> nn.Module:
    return build_model(ModelConfig(**kw), 1, 10)


def _feature_map(model: nn.Module, source: str, name: str, x: torch.Tensor) -> tuple[int, ...]:
    """Shape of the last feature map, the one global pooling sees."""
    if source == "timm":
        return tuple(model.forward_features(x).shape)
    seen = {}
    target = model.layer4 if name.startswith("resnet") else model.features
    hook = target.register_forward_hook(lambda m, i, o: seen.update(shape=tuple(o.shape)))
    model(x)
    hook.remove()
    return seen["shape"]


# (source, name, input side, feature side with the original stem, with the small stem)
STEM_MODELS = [
    ("torchvision", "resnet18", 16, 1, 2),
    ("timm", "resnet18", 16, 1, 2),
    ("torchvision", "efficientnet_b0", 32, 1, 2),
    ("timm", "test_efficientnet", 32, 1, 2),
    ("timm", "test_convnext", 32, 1, 4),
]


@pytest.mark.parametrize("source,name,side,plain_side,small_side", STEM_MODELS)
def test_small_stem_keeps_resolution_3x3_stride1_no_maxpool_and_stride1_stages_double_the_map(
    source, name, side, plain_side, small_side
):
    x = torch.randn(2, 1, side, side)
    plain = _model(source=source, name=name).eval()
    assert _feature_map(plain, source, name, x)[-1] == plain_side

    for n_stages in (0, 2):
        model = _model(source=source, name=name, small_stem=True, stride1_stages=n_stages).eval()
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        assert first.kernel_size == (3, 3) and first.stride == (1, 1)
        assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
        with torch.no_grad():
            side_out = _feature_map(model, source, name, x)[-1]
            assert side_out == small_side * 2**n_stages, (n_stages, side_out)
            assert model(x).shape == (2, 10)


def test_small_stem_refuses_transformers_and_too_many_stride1_stages():
    with pytest.raises(ModelError, match="model.small_stem"):
        _model(source="timm", name="test_vit", small_stem=True)
    with pytest.raises(ModelError, match="model.stride1_stages"):
        apply_small_stem(_model(source="timm", name="resnet18"), stride1_stages=4)


# torchvision's efficientnet/convnext classifiers are Sequential(..., Linear); timm's convnext head is nested
HEAD_MODELS = [
    ("torchvision", "resnet18"),
    ("timm", "resnet18"),
    ("torchvision", "efficientnet_b0"),
    ("timm", "test_convnext"),
    ("torchvision", "convnext_tiny"),
    ("custom", "resnet"),
]


@pytest.mark.parametrize("source,name", HEAD_MODELS)
def test_mlp_head_with_dropout_replaces_the_classifier(source, name):
    extra = {"widths": [8, 16], "depths": [1, 1]} if source == "custom" else {}
    model = _model(
        source=source,
        name=name,
        small_stem=source != "custom",
        head={"kind": "mlp", "hidden": [32], "dropout": 0.5},
        **extra,
    )
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert not any(m.out_features == 1000 for m in linears)  # the ImageNet classifier is gone
    head = dict(head_parameters(model))
    assert head, "the head's parameters are known (for freezing and the head LR)"
    shapes = sorted(tuple(p.shape) for n, p in head.items() if n.endswith("weight") and p.ndim == 2)
    assert shapes[0] == (10, 32) and shapes[1][0] == 32  # hidden layer of 32, then the 10 classes
    dropouts = [
        m.p for n, m in model.named_modules() if isinstance(m, nn.Dropout) and n.startswith(model._lab_head_name)
    ]
    assert dropouts and all(p == 0.5 for p in dropouts)
    x = torch.randn(4, 1, 8, 8)
    model.train()
    torch.manual_seed(0)
    a = model(x)
    b = model(x)
    assert not torch.allclose(a, b), "dropout is active in train mode"
    model.eval()
    assert torch.equal(model(x), model(x))


def test_linear_head_dropout_before_the_classifier():
    model = _model(source="timm", name="resnet18", dropout=0.3)
    assert isinstance(model.fc, nn.Sequential)
    assert isinstance(model.fc[0], nn.Dropout) and model.fc[0].p == 0.3
    assert isinstance(model.fc[1], nn.Linear) and model.fc[1].out_features == 10
    # timm's own drop_rate is not added on top of ours: one dropout only
    assert sum(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()) == 1


def test_cifar_resnet_widths_depths_se_and_feature_sizes():
    model = CifarResNet(1, 10, [8, 16, 32, 64], [2, 2, 2, 2], se=True, drop_path=0.2, shakedrop=0.0).eval()
    assert [len(s) for s in model.stages] == [2, 2, 2, 2]
    assert [s[-1].conv2.out_channels for s in model.stages] == [8, 16, 32, 64]
    assert all(isinstance(b.se, SqueezeExcite) for s in model.stages for b in s)
    sizes = []
    hooks = [s.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for s in model.stages]
    assert model(X32).shape == (2, 10)
    for h in hooks:
        h.remove()
    assert sizes == [32, 16, 8, 4]  # 3x3 stride-1 stem, no maxpool, one downsample per later stage
    rates = [b.drop_path_rate for s in model.stages for b in s]
    assert rates == pytest.approx([0.2 * (k + 1) / 8 for k in range(8)])  # linear in depth, the last at the max


def test_squeeze_excite_rescales_each_channel_by_a_gate_in_0_1():
    se = SqueezeExcite(16)
    x = torch.rand(3, 16, 5, 5) + 0.1
    ratio = se(x) / x
    per_channel = ratio.flatten(2)
    assert torch.allclose(per_channel, per_channel[..., :1].expand_as(per_channel))  # one gate per (sample, channel)
    assert (ratio > 0).all() and (ratio < 1).all()


def test_drop_path_drops_whole_samples_in_training_and_is_identity_in_eval():
    x = torch.ones(4000, 3, 2, 2)
    torch.manual_seed(0)
    out = drop_path(x, 0.3, training=True)
    per_sample = out.flatten(1)
    kept = per_sample[:, 0] > 0
    assert torch.all((per_sample == 0).all(1) | torch.isclose(per_sample, torch.tensor(1 / 0.7)).all(1))
    assert abs(kept.float().mean().item() - 0.7) < 0.03
    assert abs(out.mean().item() - 1.0) < 0.05  # survivors rescaled: the expectation is unchanged
    assert torch.equal(drop_path(x, 0.3, training=False), x)

    with_dp = CifarResNet(1, 10, [8, 16], [2, 2], drop_path=0.5)
    without = CifarResNet(1, 10, [8, 16], [2, 2], drop_path=0.0)
    without.load_state_dict(with_dp.state_dict())
    with_dp.eval(), without.eval()
    assert torch.equal(with_dp(X32), without(X32))
    with_dp.train()
    torch.manual_seed(1)
    assert not torch.allclose(with_dp(X32), without.train()(X32))


def test_shakedrop_forward_backward_and_eval_scaling():
    p = 0.5
    x = torch.ones(6000, 1, 1, 1, requires_grad=True)
    torch.manual_seed(0)
    y = ShakeDropFn.apply(x, p)
    y.sum().backward()
    out, grad = y.detach().flatten(), x.grad.flatten()
    kept = out == 1.0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.03
    assert out[~kept].min() >= -1 and out[~kept].max() <= 1  # alpha ~ U[-1, 1] on dropped samples
    assert abs(out.mean().item() - (1 - p)) < 0.05  # E[b + (1-b) alpha] = 1 - p
    assert torch.all(grad[kept] == 1.0)
    assert grad[~kept].min() >= 0 and grad[~kept].max() <= 1  # beta ~ U[0, 1] in the backward pass
    assert not torch.allclose(grad[~kept], out[~kept])  # beta is drawn independently of alpha

    block = BasicBlock(4, 4, 1, se=False, drop_path_rate=0.0, shakedrop_p=0.4).eval()
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
        assert torch.allclose(block(x), torch.relu(branch * 0.6 + x), atol=1e-6)  # eval: expected scaling 1 - p


def test_frozen_backbone_is_unchanged_by_an_optimizer_step_and_unfreeze_last_n():
    data = load_arrays(BUILTIN_SPECS["digits"])
    x = torch.from_numpy(data.train_x[:32]).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(data.train_y[:32])
    model = _model(source="custom", name="resnet", widths=[8, 16], depths=[1, 1])

    def step():
        before = copy.deepcopy(model.state_dict())
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01, weight_decay=0.1)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        model.zero_grad(set_to_none=True)
        return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}

    set_frozen(model, True)
    changed = step()
    assert changed == {n for n, _ in head_parameters(model)}

    set_frozen(model, False, unfreeze_last=3)
    backbone = [n for n, _ in backbone_parameters(model)]
    changed = step()
    assert changed == set(backbone[-3:]) | {n for n, _ in head_parameters(model)}

    set_frozen(model, False)
    assert step() == {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize("source", ["timm", "torchvision"])
def test_weights_path_loads_a_local_state_dict(tmp_path, source):
    if source == "timm":
        import timm

        donor = timm.create_model("resnet18", num_classes=1000)
    else:
        import torchvision

        donor = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(donor.state_dict(), path)
    saved = donor.state_dict()

    model = build_model(ModelConfig(source=source, name="resnet18", pretrained=True, weights_path=str(path)), 3, 7)
    own = model.state_dict()
    backbone = [k for k in saved if not k.startswith("fc.")]
    assert all(torch.equal(own[k], saved[k]) for k in backbone)
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 7)

    grey = build_model(ModelConfig(source=source, name="resnet18", pretrained=True, weights_path=str(path)), 1, 7)
    assert torch.allclose(grey.state_dict()["conv1.weight"], saved["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(grey.state_dict()["layer3.0.conv1.weight"], saved["layer3.0.conv1.weight"])

    other = tmp_path / "other.pth"
    torch.save(nn.Linear(3, 4).state_dict(), other)
    with pytest.raises(ModelError, match="model.weights_path: only 0"):
        build_model(ModelConfig(source=source, name="resnet18", pretrained=True, weights_path=str(other)), 3, 7)
    with pytest.raises(ModelError, match="file not found"):
        build_model(
            ModelConfig(source=source, name="resnet18", pretrained=True, weights_path=str(tmp_path / "nope.pth")), 3, 7
        )


def test_pretrained_weights_unavailable_offline_is_a_clear_preflight_error(db_url, tiny):
    from control.preflight import preflight
    from engine.config import parse_config
    from engine.models.zoo import _pretrained_host, _reachable

    if pretrained_cached("timm", "resnet18")[0] or _reachable(_pretrained_host("timm", "resnet18")):
        pytest.skip("this machine has the weights or internet access: nothing to refuse")
    cfg = parse_config(
        tiny(**{"model": {"source": "timm", "name": "resnet18", "pretrained": True, "small_stem": True}})
    )
    errors = dict(preflight(cfg, db_url))
    assert "model.pretrained" in errors
    assert "weights_path" in errors["model.pretrained"] and "resnet18" in errors["model.pretrained"]

    cfg = parse_config(tiny(**{"model": {"source": "torchvision", "name": "resnet18", "pretrained": True}}))
    assert "model.pretrained" in dict(preflight(cfg, db_url))


def test_unknown_model_names_are_refused_by_field():
    with pytest.raises(ModelError, match="model.name: timm has no model"):
        _model(source="timm", name="resnet_does_not_exist")
    with pytest.raises(ModelError, match="model.name: torchvision has no model"):
        _model(source="torchvision", name="resnet_does_not_exist")
    with pytest.raises(ModelError, match="model.name: unknown custom model"):
        _model(source="custom", name="vgg")


def test_small_cnn_width_and_dropout():
    model = _model(source="custom", name="small_cnn", widths=[8], dropout=0.25)
    assert model.num_features == 32
    assert isinstance(model.head[0], nn.Dropout) and model.head[0].p == 0.25
    assert np.prod(model(torch.randn(2, 1, 8, 8)).shape) == 20


def test_pretrained_weights_load_from_the_local_caches_without_network(tmp_path, monkeypatch):
    """A fake (but real-format) Hugging Face cache for timm and torch hub cache for torchvision."""
    import timm
    import torchvision
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert not pretrained_cached("timm", "resnet18")[0] and not pretrained_cached("torchvision", "resnet18")[0]

    timm_donor = timm.create_model("resnet18").state_dict()
    repo = tmp_path / "hf" / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in timm_donor.items()}, str(repo / "snapshots" / ("0" * 40) / "model.safetensors")
    )
    tv_donor = torchvision.models.resnet18().state_dict()
    url = torchvision.models.get_model_weights("resnet18").DEFAULT.url
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(tv_donor, tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1])

    for source, donor in (("timm", timm_donor), ("torchvision", tv_donor)):
        assert pretrained_cached(source, "resnet18")[0]
        model = build_model(ModelConfig(source=source, name="resnet18", pretrained=True), 3, 5)
        own = model.state_dict()
        assert all(torch.equal(own[k], donor[k]) for k in donor if not k.startswith("fc.")), source


def test_drop_path_reaches_library_models_and_zero_means_off():
    from timm.layers import DropPath
    from torchvision.ops import StochasticDepth

    tv = _model(source="torchvision", name="efficientnet_b0", drop_path=0.3)
    rates = [m.p for m in tv.modules() if isinstance(m, StochasticDepth)]
    assert rates and max(rates) == pytest.approx(0.3, abs=0.02) and rates == sorted(rates)  # linear in depth
    off = _model(source="torchvision", name="efficientnet_b0")  # torchvision's own default would be 0.2
    assert all(m.p == 0 for m in off.modules() if isinstance(m, StochasticDepth))
    timm_model = _model(source="timm", name="resnet18", drop_path=0.1)
    assert max(m.drop_prob for m in timm_model.modules() if isinstance(m, DropPath)) == pytest.approx(0.1)
    with pytest.raises(ModelError, match="model.drop_path"):
        _model(source="torchvision", name="resnet18", drop_path=0.1)
