"""Model factory: a string in the config selects an implementation.

- custom: `small_cnn` (a fast baseline) and `resnet` (CIFAR-style ResNet: configurable widths and
  depths, SE blocks, stochastic depth, ShakeDrop, dropout before the head).
- timm: any `timm.create_model` name; torchvision: any `torchvision.models.get_model` name.
Adapters then apply the small-image stem, replace the classifier head, and set up freezing.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


class ModelError(ValueError):
    """A model the config asks for that cannot be built, with a user-facing message."""


# ------------------------------------------------------------------------------ custom models
class SmallCNN(nn.Module):
    """Three conv blocks and a linear head: trains the digits to >0.95 in seconds on a CPU."""

    def __init__(self, in_ch: int, num_classes: int, width: int = 32, dropout: float = 0.0):
        super().__init__()

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        self.features = nn.Sequential(
            block(in_ch, width), block(width, width), nn.MaxPool2d(2),
            block(width, 2 * width), nn.MaxPool2d(2),
            block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.num_features = 4 * width
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.num_features, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


class SqueezeExcite(nn.Module):
    def __init__(self, ch: int, reduction: int = 16):
        super().__init__()
        hidden = max(4, ch // reduction)
        self.fc1, self.fc2 = nn.Conv2d(ch, hidden, 1), nn.Conv2d(hidden, ch, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s), inplace=True)))


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample, rescale survivors."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class ShakeDropFn(torch.autograd.Function):
    """ShakeDrop (Yamada et al. 2018): forward scales the branch by b + (1-b)*alpha, backward by b + (1-b)*beta."""

    @staticmethod
    def forward(ctx, x, p_drop):
        n = x.shape[0]
        gate = x.new_empty((n, 1, 1, 1)).bernoulli_(1.0 - p_drop)
        alpha = x.new_empty((n, 1, 1, 1)).uniform_(-1.0, 1.0)
        ctx.save_for_backward(gate)
        return x * (gate + (1 - gate) * alpha)

    @staticmethod
    def backward(ctx, grad):
        (gate,) = ctx.saved_tensors
        beta = grad.new_empty(gate.shape).uniform_(0.0, 1.0)
        return grad * (gate + (1 - gate) * beta), None


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, se: bool, drop_path_rate: float, shakedrop_p: float):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.se = SqueezeExcite(cout) if se else nn.Identity()
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.drop_path_rate, self.shakedrop_p = drop_path_rate, shakedrop_p

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.se(self.bn2(self.conv2(out)))
        if self.shakedrop_p > 0:
            out = ShakeDropFn.apply(out, self.shakedrop_p) if self.training else out * (1.0 - self.shakedrop_p)
        out = drop_path(out, self.drop_path_rate, self.training)
        return F.relu(out + self.shortcut(x), inplace=True)


class CifarResNet(nn.Module):
    """ResNet for small images: 3x3 stride-1 stem, no maxpool, stages of BasicBlocks.

    Drop path and ShakeDrop rates grow linearly with block depth (the usual schedule)."""

    def __init__(self, in_ch, num_classes, widths, depths, se=False, drop_path=0.0, shakedrop=0.0, dropout=0.0):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        total, k = sum(depths), 0
        stages, cin = [], widths[0]
        for s, (w, d) in enumerate(zip(widths, depths)):
            blocks = []
            for b in range(d):
                frac = (k + 1) / total
                blocks.append(BasicBlock(cin, w, 2 if (b == 0 and s > 0) else 1, se, drop_path * frac, shakedrop * frac))
                cin, k = w, k + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes))
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.head(self.pool(self.stages(self.stem(x))))


CUSTOM_MODELS = ("small_cnn", "resnet")


# ------------------------------------------------------------------------------ library models
def _weights_cache_hint() -> str:
    return os.environ.get("TORCH_HOME") or os.path.expanduser("~/.cache/torch")


def _create_timm(cfg, in_ch, num_classes):
    import timm

    if cfg.name not in timm.list_models() and cfg.name.split(".")[0] not in timm.list_models():
        raise ModelError(f"model.name: timm has no model '{cfg.name}'")
    kwargs = dict(num_classes=num_classes, in_chans=in_ch)
    if cfg.drop_path > 0:
        kwargs["drop_path_rate"] = cfg.drop_path
    if cfg.dropout > 0:
        kwargs["drop_rate"] = cfg.dropout
    if cfg.pretrained and cfg.weights_path:
        model = timm.create_model(cfg.name, pretrained=False, **kwargs)
        _load_weights_file(model, cfg.weights_path)
        return model
    try:
        return timm.create_model(cfg.name, pretrained=cfg.pretrained, **kwargs)
    except Exception as exc:  # no network, no cache
        if cfg.pretrained:
            raise ModelError(f"model.pretrained: weights for '{cfg.name}' are not in the local cache and cannot be "
                             f"downloaded ({type(exc).__name__}); give model.weights_path or turn pretrained off") from None
        raise ModelError(f"model.name: {exc}") from None


def _create_torchvision(cfg, in_ch, num_classes):
    import torchvision.models as tvm

    if cfg.name not in tvm.list_models():
        raise ModelError(f"model.name: torchvision has no model '{cfg.name}'")
    if cfg.pretrained and not cfg.weights_path:
        try:
            model = tvm.get_model(cfg.name, weights="DEFAULT")
        except Exception as exc:
            raise ModelError(f"model.pretrained: weights for '{cfg.name}' are not in {_weights_cache_hint()} and cannot be "
                             f"downloaded ({type(exc).__name__}); give model.weights_path or turn pretrained off") from None
    else:
        model = tvm.get_model(cfg.name, weights=None)
        if cfg.pretrained:
            _load_weights_file(model, cfg.weights_path)
    _adapt_in_channels(model, in_ch)
    return model  # the head is replaced later, so num_classes is set there


def _load_weights_file(model: nn.Module, path: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model.weights_path: file not found: {path}")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    own = model.state_dict()
    # Keep tensors whose shapes match: the classifier is replaced anyway.
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ModelError(f"model.weights_path: no tensor in {path} matches the model's layers")
    model.load_state_dict(usable, strict=False)


def _first_conv(model: nn.Module):
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            return name, mod
    return None, None


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent = model
    parts = name.split(".")
    for p in parts[:-1]:
        parent = getattr(parent, p)
    setattr(parent, parts[-1], new)


def _adapt_in_channels(model, in_ch):
    name, conv = _first_conv(model)
    if conv is None or conv.in_channels == in_ch:
        return
    new = nn.Conv2d(in_ch, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None)
    with torch.no_grad():  # grey input: sum the RGB filters so pretrained features still respond
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True).repeat(1, in_ch, 1, 1) / in_ch * (1 if in_ch == 1 else 1))
    _set_module(model, name, new)


def apply_small_stem(model: nn.Module, stride1_stages: int = 0) -> None:
    """First conv -> 3x3 stride 1, max pools -> identity, then stride 1 in the first N later stride-2 convs."""
    name, conv = _first_conv(model)
    if conv is None:
        raise ModelError("model.small_stem: the model has no convolution to adapt")
    new = nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=conv.bias is not None)
    _set_module(model, name, new)
    for mname, mod in list(model.named_modules()):
        if isinstance(mod, nn.MaxPool2d):
            _set_module(model, mname, nn.Identity())
    changed = 0
    for mname, mod in model.named_modules():
        if changed >= stride1_stages:
            break
        if isinstance(mod, nn.Conv2d) and mname != name and mod.stride == (2, 2):
            mod.stride = (1, 1)
            # the matching downsample shortcut in the same block, if any
            block = mname.rsplit(".", 1)[0]
            for sname, smod in model.named_modules():
                if sname.startswith(block.rsplit(".", 1)[0] + ".") and isinstance(smod, nn.Conv2d) and smod.stride == (2, 2) and "downsample" in sname:
                    smod.stride = (1, 1)
            changed += 1


# ------------------------------------------------------------------------------ heads
def _classifier(model: nn.Module):
    """(attribute path, module) of the final classifier, for timm, torchvision and our models."""
    if hasattr(model, "get_classifier") and callable(model.get_classifier):
        clf = model.get_classifier()
        for name, mod in model.named_modules():
            if mod is clf:
                return name, mod
    for attr in ("head", "fc", "classifier", "heads"):
        if hasattr(model, attr):
            return attr, getattr(model, attr)
    raise ModelError("could not find the model's classifier to replace")


def _in_features(mod: nn.Module) -> int:
    if isinstance(mod, nn.Linear):
        return mod.in_features
    linears = [m for m in mod.modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[0].in_features
    raise ModelError("could not tell the classifier's input size")


def make_head(in_features: int, num_classes: int, head_cfg, dropout: float) -> nn.Module:
    if head_cfg.kind == "linear":
        return nn.Sequential(nn.Dropout(max(dropout, head_cfg.dropout)), nn.Linear(in_features, num_classes))
    layers, cin = [], in_features
    for h in head_cfg.hidden:
        layers += [nn.Dropout(head_cfg.dropout), nn.Linear(cin, h), nn.ReLU(inplace=True)]
        cin = h
    layers += [nn.Dropout(max(dropout, head_cfg.dropout)), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def replace_head(model: nn.Module, num_classes: int, cfg) -> None:
    name, clf = _classifier(model)
    if isinstance(clf, nn.Identity) and hasattr(model, "num_features"):
        in_features = model.num_features
    else:
        in_features = _in_features(clf)
    head = make_head(in_features, num_classes, cfg.head, cfg.dropout)
    if name in ("", None):
        raise ModelError("could not find the model's classifier to replace")
    # Some classifiers are Sequential(norm, flatten, ..., Linear) (torchvision ConvNeXt): keep what
    # comes before the last linear layer and put the new head after it.
    if isinstance(clf, nn.Sequential):
        mods = list(clf.children())
        linear_at = [i for i, m in enumerate(mods) if isinstance(m, nn.Linear)]
        keep = [m for m in mods[:linear_at[0]] if not isinstance(m, nn.Dropout)] if linear_at else []
        if keep:
            head = nn.Sequential(*keep, *head)
    _set_module(model, name, head)
    model._lab_head_name = name  # noqa: SLF001 (freezing needs to know which params are the head)


def head_parameters(model: nn.Module):
    name = getattr(model, "_lab_head_name", "head")
    prefix = name + "."
    return [(n, p) for n, p in model.named_parameters() if n.startswith(prefix)]


def backbone_parameters(model: nn.Module):
    head = {n for n, _ in head_parameters(model)}
    return [(n, p) for n, p in model.named_parameters() if n not in head]


def set_frozen(model: nn.Module, frozen: bool, unfreeze_last: int | None = None) -> None:
    """frozen=True: only the head trains. frozen=False: all train, or only the last N backbone tensors."""
    backbone = backbone_parameters(model)
    for i, (_, p) in enumerate(backbone):
        if frozen:
            p.requires_grad_(False)
        elif unfreeze_last is None:
            p.requires_grad_(True)
        else:
            p.requires_grad_(i >= len(backbone) - unfreeze_last)
    for _, p in head_parameters(model):
        p.requires_grad_(True)


# ------------------------------------------------------------------------------ entry point
def build_model(cfg, in_ch: int, num_classes: int) -> nn.Module:
    """cfg: ModelConfig."""
    if cfg.source == "custom":
        if cfg.name == "small_cnn":
            model = SmallCNN(in_ch, num_classes, width=cfg.widths[0] if cfg.widths != [64, 128, 256, 512] else 32, dropout=cfg.dropout)
        elif cfg.name == "resnet":
            model = CifarResNet(in_ch, num_classes, cfg.widths, cfg.depths, cfg.se, cfg.drop_path, cfg.shakedrop, cfg.dropout)
        else:
            raise ModelError(f"model.name: unknown custom model '{cfg.name}' (choose from {', '.join(CUSTOM_MODELS)})")
        if cfg.head.kind == "mlp":
            replace_head(model, num_classes, cfg)
        else:
            model._lab_head_name = "head"
        return model
    model = _create_timm(cfg, in_ch, num_classes) if cfg.source == "timm" else _create_torchvision(cfg, in_ch, num_classes)
    if cfg.small_stem:
        apply_small_stem(model, cfg.stride1_stages)
    replace_head(model, num_classes, cfg)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
