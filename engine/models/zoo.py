"""Library models (timm, torchvision) and the adapters every model goes through: pretrained weights
from a local file, the small-image stem, the classifier head, freezing. `build_model` is the factory."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

import torch
import torch.nn as nn

from engine.models.custom import CUSTOM_MODELS, CifarResNet, SmallCNN


class ModelError(ValueError):
    """A model the config asks for that cannot be built, with a user-facing message."""


# ------------------------------------------------------------------------------ library models
_PRETRAINED_HINT = "give model.weights_path (a local .pth/.pt/.safetensors file) or turn model.pretrained off"


def _weights_cache_hint() -> str:
    import torch.hub

    return os.path.join(torch.hub.get_dir(), "checkpoints")


@functools.lru_cache(maxsize=8)
def _reachable(host: str, timeout_s: float = 3.0) -> bool:
    """Can we open a TCP connection to host:443? Asked once per host and process, so that a machine
    without internet fails in a second instead of after timm's minute of download retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") and "huggingface" in host:
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def pretrained_cached(source: str, name: str) -> tuple[bool, str]:
    """(are the default pretrained weights of this model already on disk?, where we looked). No network."""
    if source == "torchvision":
        import torchvision.models as tvm

        try:
            url = tvm.get_model_weights(name).DEFAULT.url
        except Exception:
            return False, f"torchvision has no pretrained weights for '{name}'"
        path = os.path.join(_weights_cache_hint(), os.path.basename(url))
        return os.path.isfile(path), path
    if source == "timm":
        import timm.models

        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None:
            return False, f"timm has no pretrained weights for '{name}'"
        if cfg.file and os.path.isfile(cfg.file):
            return True, cfg.file
        if cfg.hf_hub_id:
            from huggingface_hub import try_to_load_from_cache

            repo = cfg.hf_hub_id.split("@")[0]
            files = (
                [cfg.hf_hub_filename]
                if cfg.hf_hub_filename
                else ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
            )
            for f in files:
                hit = try_to_load_from_cache(repo, f, cache_dir=_hf_cache_dir())
                if isinstance(hit, str):
                    return True, hit
            return False, f"the Hugging Face cache (repo {repo})"
        if cfg.url:
            path = os.path.join(_weights_cache_hint(), os.path.basename(cfg.url))
            return os.path.isfile(path), path
        return False, f"timm has no download location for '{name}'"
    return False, "custom models have no pretrained weights"


def _hf_cache_dir() -> str:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it once at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return os.path.join(home, "hub")


def _pretrained_host(source: str, name: str) -> str:
    if source == "timm":
        import timm.models

        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is not None and cfg.hf_hub_id:
            endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
            return endpoint.split("://", 1)[-1].split("/", 1)[0]
        if cfg is not None and cfg.url:
            return cfg.url.split("://", 1)[-1].split("/", 1)[0]
    return "download.pytorch.org"


def _check_pretrained_obtainable(source: str, name: str) -> None:
    """Raise a clear ModelError (field model.pretrained) when the weights are neither cached nor downloadable."""
    cached, where = pretrained_cached(source, name)
    if cached:
        return
    host = _pretrained_host(source, name)
    if not _reachable(host):
        raise ModelError(
            f"model.pretrained: weights for '{name}' are not in the local cache ({where}) and {host} "
            f"cannot be reached (offline?); {_PRETRAINED_HINT}"
        )


HUB_PREFIX = "hf-hub:"


def hub_architecture(name: str, stated: str | None = None) -> tuple[str, dict]:
    """The timm architecture (and its saved model_args) of an 'hf-hub:org/repo[@rev]' name, without the
    network: the repo's config.json when it is in the Hugging Face cache, else the architecture the user
    stated (model.hub_architecture), else the repo's own name when it is a timm model name (timm's own
    repos: 'timm/resnet10t.c3_in1k' is resnet10t)."""
    import timm

    if stated is not None and not timm.is_model(stated):
        raise ModelError(f"model.hub_architecture: timm has no architecture '{stated}'")

    repo = name.removeprefix(HUB_PREFIX).split("@")[0]
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo, "config.json", cache_dir=_hf_cache_dir())
    except Exception:  # a repo id the hub library refuses: judged by its name below
        hit = None
    if isinstance(hit, str):
        import json

        with open(hit, encoding="utf-8") as f:
            conf = json.load(f)
        arch = conf.get("architecture") or conf.get("model_name")
        if arch and timm.is_model(arch):
            if stated is not None and stated != arch:
                raise ModelError(
                    f"model.hub_architecture: the cached config of '{name}' says its architecture is '{arch}', "
                    f"not '{stated}'; leave model.hub_architecture empty or set it to {arch}"
                )
            return arch, dict(conf.get("model_args") or {})
    if stated is not None:
        return stated, {}
    base = repo.rsplit("/", 1)[-1].split(".")[0]
    if timm.is_model(base):
        return base, {}
    raise ModelError(
        f"model.name: '{name}' is a Hugging Face hub model whose architecture is not known offline (its "
        "config.json is not in the Hugging Face cache and the repo's name is no timm architecture): state it "
        "in model.hub_architecture (e.g. convnext_tiny; the repo's config.json names it) and give its weights "
        "in model.weights_path, or let this machine reach huggingface.co"
    )


def _create_timm(cfg, in_ch, num_classes):
    import timm

    hub = cfg.name.startswith(HUB_PREFIX)
    if not hub and cfg.name not in timm.list_models() and cfg.name.split(".")[0] not in timm.list_models():
        raise ModelError(f"model.name: timm has no model '{cfg.name}'")
    # The classifier is replaced by our head (with its own dropout), so timm's drop_rate is not used.
    kwargs = dict(num_classes=num_classes, in_chans=in_ch)
    if cfg.drop_path > 0:
        kwargs["drop_path_rate"] = cfg.drop_path
    if hub:
        return _create_hub(timm, cfg, kwargs)
    if cfg.pretrained and cfg.weights_path:
        model = _timm_model(timm, cfg.name, cfg, kwargs)
        _load_weights_file(model, cfg.weights_path)
        return model
    if cfg.pretrained:
        cached, where = pretrained_cached("timm", cfg.name)
        if cached:  # load the cached file directly: no hub round trips (a minute of retries when offline)
            kwargs["pretrained_cfg_overlay"] = {"file": where, "source": None}
        else:
            _check_pretrained_obtainable("timm", cfg.name)
    try:
        return timm.create_model(cfg.name, pretrained=cfg.pretrained, **kwargs)
    except TypeError as exc:
        if "drop_path_rate" in str(exc):
            raise ModelError(_NO_DROP_PATH.format(name=cfg.name)) from None
        raise ModelError(f"model.name: {str(exc)[:300]}") from None
    except Exception as exc:  # no network, no cache
        if cfg.pretrained:
            raise ModelError(
                f"model.pretrained: weights for '{cfg.name}' are not in the local cache and cannot be "
                f"downloaded ({type(exc).__name__}); {_PRETRAINED_HINT}"
            ) from None
        raise ModelError(f"model.name: {str(exc)[:300]}") from None


def _create_hub(timm, cfg, kwargs: dict) -> nn.Module:
    """An 'hf-hub:org/repo' model. Weights from model.weights_path, or from the Hugging Face cache, are
    loaded into the architecture built offline (hub_architecture); otherwise they need the hub itself."""
    weights = cfg.weights_path if cfg.pretrained else None
    if cfg.pretrained and not weights:
        weights = _hub_cached_weights(cfg.name)
        if weights is None:
            if not _reachable(_hub_host()):
                raise ModelError(
                    f"model.pretrained: '{cfg.name}' has its weights on the Hugging Face hub, which cannot be "
                    f"reached ({_hub_host()}), and they are not in its cache; hub weights need the network or "
                    "a local weights file (model.weights_path)"
                )
            try:  # online: timm reads the repo's config and weights itself
                return timm.create_model(cfg.name, pretrained=True, **kwargs)
            except Exception as exc:
                raise ModelError(f"model.pretrained: {cfg.name}: {type(exc).__name__}: {str(exc)[:300]}") from None
    try:
        arch, model_args = hub_architecture(cfg.name, cfg.hub_architecture)
    except ModelError as exc:
        if str(exc).startswith("model.hub_architecture") or not _reachable(_hub_host()):
            raise
        arch, model_args = cfg.name, {}  # online: timm reads the repo's config.json itself
    model = _timm_model(timm, arch, cfg, {**model_args, **kwargs})
    if weights:
        _load_weights_file(model, weights)
    return model


def _hub_cached_weights(name: str) -> str | None:
    """The weights file of an 'hf-hub:' repo in the Hugging Face cache, else None. No network."""
    from huggingface_hub import try_to_load_from_cache

    repo = name.removeprefix(HUB_PREFIX).split("@")[0]
    for f in ("model.safetensors", "pytorch_model.bin"):
        try:
            hit = try_to_load_from_cache(repo, f, cache_dir=_hf_cache_dir())
        except Exception:
            return None
        if isinstance(hit, str):
            return hit
    return None


def hub_weights_obtainable(name: str) -> tuple[bool, str]:
    """(can an 'hf-hub:' model's pretrained weights be had on this machine?, where): from the Hugging Face
    cache, or from the hub when it can be reached (a 3 s probe, asked once per process)."""
    cached = _hub_cached_weights(name)
    if cached is not None:
        return True, cached
    if _reachable(_hub_host()):
        return True, _hub_host()
    return False, f"not in the Hugging Face cache ({_hf_cache_dir()}) and {_hub_host()} cannot be reached"


_NO_DROP_PATH = (
    "model.drop_path: timm's '{name}' has no stochastic depth (no drop_path_rate); "
    "ResNets, EfficientNets, ConvNeXt and vision transformers do"
)


def _hub_host() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://", 1)[-1].split("/", 1)[0]


def _timm_model(timm, name: str, cfg, kwargs: dict) -> nn.Module:
    """timm.create_model without pretrained weights, its failures in the config's words."""
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as exc:
        if "drop_path_rate" in str(exc):
            raise ModelError(_NO_DROP_PATH.format(name=cfg.name)) from None
        raise ModelError(f"model.name: {str(exc)[:300]}") from None
    except Exception as exc:
        raise ModelError(f"model.name: {str(exc)[:300]}") from None


def _create_torchvision(cfg, in_ch, num_classes):
    import torchvision.models as tvm

    if cfg.name not in tvm.list_models():
        raise ModelError(f"model.name: torchvision has no model '{cfg.name}'")
    if cfg.pretrained and not cfg.weights_path:
        _check_pretrained_obtainable("torchvision", cfg.name)
    weights = "DEFAULT" if cfg.pretrained and not cfg.weights_path else None
    try:
        # model.drop_path is authoritative: 0 turns off torchvision's default stochastic depth too
        model = _torchvision_with_drop_path(tvm, cfg, weights)
    except ModelError:
        raise
    except Exception as exc:
        if weights:
            raise ModelError(
                f"model.pretrained: weights for '{cfg.name}' are not in {_weights_cache_hint()} and cannot be "
                f"downloaded ({type(exc).__name__}); {_PRETRAINED_HINT}"
            ) from None
        raise ModelError(f"model.name: {str(exc)[:300]}") from None
    if cfg.pretrained and cfg.weights_path:
        _load_weights_file(model, cfg.weights_path)
    _adapt_in_channels(model, in_ch)
    if cfg.shakedrop > 0:
        apply_shakedrop(model, cfg.name, cfg.shakedrop)
    return model  # the head is replaced later, so num_classes is set there


def _torchvision_with_drop_path(tvm, cfg, weights):
    try:
        return tvm.get_model(cfg.name, weights=weights, stochastic_depth_prob=cfg.drop_path)
    except TypeError as exc:
        if "stochastic_depth_prob" not in str(exc):
            raise
        if cfg.drop_path > 0:
            raise ModelError(
                f"model.drop_path: torchvision's '{cfg.name}' has no stochastic depth "
                "(EfficientNet, ConvNeXt and Swin do; or use a timm or custom model)"
            ) from None
        return tvm.get_model(cfg.name, weights=weights)


class _ShakeDropGate(nn.Module):
    """ShakeDrop on a residual branch whose output passes through this module before the shortcut is
    added; put in place of (after) a torchvision block's `stochastic_depth`, which sits exactly there."""

    def __init__(self, p: float, before: nn.Module | None = None):
        super().__init__()
        self.p, self.before = p, before

    def forward(self, x):
        from engine.models.custom import ShakeDropFn

        if self.before is not None:
            x = self.before(x)
        return ShakeDropFn.apply(x, self.p) if self.training else x * (1.0 - self.p)


SHAKEDROP_TORCHVISION = "torchvision ResNet / ResNeXt / Wide ResNet, EfficientNet / EfficientNetV2 and ConvNeXt"


def apply_shakedrop(model: nn.Module, name: str, p_max: float) -> None:
    """ShakeDrop on torchvision's residual blocks, the rate growing linearly with depth to p_max as on the
    custom ResNet; the weights' names do not change.
    - ResNet family: each BasicBlock / Bottleneck's residual branch (the output of its last BN, just
      before the shortcut is added) is gated by a forward hook.
    - EfficientNet / EfficientNetV2 (MBConv, FusedMBConv blocks with a shortcut) and ConvNeXt (CNBlock):
      the branch already passes through the block's `stochastic_depth` right before the shortcut is
      added; the gate is put there (after stochastic depth, when both are on)."""
    from torchvision.models.convnext import CNBlock
    from torchvision.models.efficientnet import FusedMBConv, MBConv
    from torchvision.models.resnet import BasicBlock as TvBasic
    from torchvision.models.resnet import Bottleneck as TvBottleneck

    from engine.models.custom import ShakeDropFn

    def residual(m) -> bool:
        if isinstance(m, (TvBasic, TvBottleneck, CNBlock)):
            return True
        return isinstance(m, (MBConv, FusedMBConv)) and m.use_res_connect

    blocks = [m for m in model.modules() if residual(m)]
    if not blocks:
        raise ModelError(
            f"model.shakedrop: torchvision's '{name}' has no residual blocks ShakeDrop can gate; it is available "
            f"on the custom ResNet, on {SHAKEDROP_TORCHVISION} and on {SHAKEDROP_TIMM}"
        )

    def gate(mod, _inputs, out):
        if not mod.training:
            return out * (1.0 - mod._lab_shakedrop)  # noqa: SLF001
        return ShakeDropFn.apply(out, mod._lab_shakedrop)  # noqa: SLF001

    for i, block in enumerate(blocks):
        p = p_max * (i + 1) / len(blocks)
        if isinstance(block, (TvBasic, TvBottleneck)):
            last_bn = block.bn3 if isinstance(block, TvBottleneck) else block.bn2
            last_bn._lab_shakedrop = p  # noqa: SLF001
            last_bn.register_forward_hook(gate)
        else:
            sd = block.stochastic_depth
            block.stochastic_depth = _ShakeDropGate(p, sd if getattr(sd, "p", 0.0) > 0 else None)


SHAKEDROP_TIMM = (
    "timm ResNets (resnet*, resnext*, seresnet*, wide_resnet*…), EfficientNets, MobileNetV2-V4 and ConvNeXt"
)


def _timm_residual_blocks(model: nn.Module) -> list[nn.Module]:
    """timm blocks whose forward adds the shortcut to `self.drop_path(branch)`: the place ShakeDrop gates.
    ResNet's BasicBlock / Bottleneck (drop_path is None without stochastic depth, and skipped then);
    the EfficientNet / MobileNet blocks only when they have a skip (has_skip; otherwise drop_path is
    never applied); ConvNeXt's block always."""
    from timm.models import _efficientnet_blocks as eb
    from timm.models.convnext import ConvNeXtBlock
    from timm.models.resnet import BasicBlock, Bottleneck

    always = (BasicBlock, Bottleneck, ConvNeXtBlock)
    with_skip = (
        eb.ConvBnAct,
        eb.DepthwiseSeparableConv,
        eb.InvertedResidual,
        eb.UniversalInvertedResidual,
        eb.MobileAttention,
        eb.EdgeResidual,
    )
    return [
        m
        for m in model.modules()
        if hasattr(m, "drop_path")
        and (isinstance(m, always) or (isinstance(m, with_skip) and getattr(m, "has_skip", False)))
    ]


def apply_shakedrop_timm(model: nn.Module, name: str, p_max: float) -> None:
    """ShakeDrop on a timm model's residual branches (`_timm_residual_blocks`), the rate growing linearly
    with depth to p_max: each block's `drop_path` (applied to the branch right before the shortcut is
    added) becomes the gate, after timm's own stochastic depth when that is on. No parameter is added
    or renamed. A model with no such block (VGG, vision transformers, ...) is refused."""
    from timm.layers import DropPath

    blocks = _timm_residual_blocks(model)
    if not blocks:
        raise ModelError(
            f"model.shakedrop: timm's '{name}' has none of the convolutional residual blocks ShakeDrop gates (a "
            f"branch added to its shortcut through drop_path); it is available on {SHAKEDROP_TIMM}, on the custom "
            f"ResNet and on {SHAKEDROP_TORCHVISION}"
        )
    for i, block in enumerate(blocks):
        before = block.drop_path if isinstance(block.drop_path, DropPath) and block.drop_path.drop_prob > 0 else None
        block.drop_path = _ShakeDropGate(p_max * (i + 1) / len(blocks), before)


def _read_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "model_state_dict"):  # checkpoints that wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise ModelError(f"model.weights_path: {path} does not hold a state_dict")
    return state


# initialising from another run: the share of the new model's tensors the parent must supply
INIT_MIN_SHARE = 0.5


def matching_tensors(model: nn.Module, state_dict: dict) -> dict:
    """The tensors of `state_dict` that fit `model` by name and shape (what initialising from a run loads)."""
    own = model.state_dict()
    return {k: v for k, v in state_dict.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}


def _load_weights_file(model: nn.Module, path: str) -> tuple[int, int]:
    """Load a local weights file into `model`; returns (tensors loaded, tensors in the model).

    Tensors whose shapes differ are skipped (the classifier is replaced anyway), a first conv with a
    different number of input channels is adapted (timm's adapt_input_conv: grey = sum of RGB
    filters), and a file that matches less than half of the model is refused as the wrong one."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model.weights_path: file not found: {path}")
    try:
        state = _read_state_dict(p)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"model.weights_path: cannot read {path}: {type(exc).__name__}: {str(exc)[:200]}") from None
    state = {
        k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items() if isinstance(v, torch.Tensor)
    }
    own = model.state_dict()
    usable = {}
    for k, v in state.items():
        if k not in own:
            continue
        mine = own[k]
        if mine.shape == v.shape:
            usable[k] = v
        elif mine.ndim == 4 and v.ndim == 4 and mine.shape[0] == v.shape[0] and mine.shape[2:] == v.shape[2:]:
            from timm.models import adapt_input_conv

            usable[k] = adapt_input_conv(mine.shape[1], v.float()).to(mine.dtype)
    if len(usable) < 0.5 * len(own):
        raise ModelError(
            f"model.weights_path: only {len(usable)} of the model's {len(own)} tensors match {path}; "
            "is it a checkpoint of this architecture?"
        )
    model.load_state_dict(usable, strict=False)
    return len(usable), len(own)


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
    """torchvision models are built for RGB: give the first conv `in_ch` inputs, keeping what it learnt."""
    name, conv = _first_conv(model)
    if conv is None or conv.in_channels == in_ch:
        return
    from timm.models import adapt_input_conv

    new = nn.Conv2d(
        in_ch,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        new.weight.copy_(adapt_input_conv(in_ch, conv.weight))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    _set_module(model, name, new)


def _stride_one(model: nn.Module, name: str, mod: nn.Module) -> None:
    """Turn a stride-2 conv (or pool) into stride 1 that keeps the spatial size."""
    if isinstance(mod, nn.Conv2d):
        mod.stride = (1, 1)
        if type(mod) is nn.Conv2d and mod.padding_mode == "zeros":
            mod.padding = "same"  # e.g. ConvNeXt's 2x2 patchify downsample would otherwise shrink by 1
    else:
        _set_module(model, name, nn.Identity())


def apply_small_stem(model: nn.Module, stride1_stages: int = 0, kernel: int = 3, stride: int = 1) -> None:
    """Small-image stem for ResNet/EfficientNet/ConvNeXt-style CNNs (on 32-64 px images the ImageNet stem's
    4x downsampling would discard most of each image): the first conv
    becomes `kernel` x `kernel`, stride `stride` (3x3 stride 1 by default; freshly initialised), max pools become identity, and the first
    `stride1_stages` stride-2 stages get stride 1 (their downsample shortcuts too), keeping their size."""
    name, conv = _first_conv(model)
    if conv is None:
        raise ModelError("model.small_stem: the model has no convolution to adapt")
    if "patch" in name or "conv_proj" in name or hasattr(model, "pos_embed"):
        raise ModelError(
            "model.small_stem: applies to convolutional models (ResNet, EfficientNet, ConvNeXt); "
            "for a vision transformer set data.image_size instead"
        )
    new = nn.Conv2d(conv.in_channels, conv.out_channels, kernel, stride, kernel // 2, bias=conv.bias is not None)
    _set_module(model, name, new)
    for mname, mod in list(model.named_modules()):
        if isinstance(mod, nn.MaxPool2d):
            _set_module(model, mname, nn.Identity())
    changed = 0
    for mname, mod in list(model.named_modules()):
        if changed >= stride1_stages:
            break
        if mname == name or not isinstance(mod, nn.Conv2d) or tuple(mod.stride) != (2, 2):
            continue
        _stride_one(model, mname, mod)
        # the block's own downsample shortcut (ResNets): conv or avg-pool with stride 2
        stage = mname.rsplit(".", 2)[0] + "."  # "layer2.0.conv1" -> "layer2."
        for sname, smod in list(model.named_modules()):
            is_shortcut = any(k in sname for k in ("downsample", "shortcut"))
            if sname.startswith(stage) and is_shortcut and sname != mname:
                if isinstance(smod, nn.Conv2d) and tuple(smod.stride) == (2, 2):
                    _stride_one(model, sname, smod)
                elif isinstance(smod, nn.AvgPool2d) and smod.stride in (2, (2, 2)):
                    _stride_one(model, sname, smod)
        changed += 1
    if changed < stride1_stages:
        raise ModelError(f"model.stride1_stages: the model has only {changed} stride-2 stages after its stem")


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
        keep = [m for m in mods[: linear_at[0]] if not isinstance(m, nn.Dropout)] if linear_at else []
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
            model = SmallCNN(
                in_ch,
                num_classes,
                width=cfg.widths[0] if cfg.widths != [64, 128, 256, 512] else 32,
                dropout=cfg.dropout,
            )
        elif cfg.name == "resnet":
            model = CifarResNet(
                in_ch,
                num_classes,
                cfg.widths,
                cfg.depths,
                cfg.se,
                cfg.drop_path,
                cfg.shakedrop,
                cfg.dropout,
                stem_kernel=cfg.stem_kernel,
                stem_stride=cfg.stem_stride,
                stem_width=cfg.stem_width,
            )
        else:
            raise ModelError(f"model.name: unknown custom model '{cfg.name}' (choose from {', '.join(CUSTOM_MODELS)})")
        if cfg.head.kind == "mlp":
            replace_head(model, num_classes, cfg)
        else:
            model._lab_head_name = "head"
        return model
    model = (
        _create_timm(cfg, in_ch, num_classes) if cfg.source == "timm" else _create_torchvision(cfg, in_ch, num_classes)
    )
    if cfg.source == "timm" and cfg.shakedrop > 0:
        apply_shakedrop_timm(model, cfg.name, cfg.shakedrop)
    if cfg.small_stem:
        apply_small_stem(model, cfg.stride1_stages, cfg.stem_kernel, cfg.stem_stride)
    replace_head(model, num_classes, cfg)
    return model
