"""Batched augmentation on uint8 NHWC tensors (CPU or GPU), with per-sample random parameters.

Each op gives a transform the same meaning as its albumentations namesake in `engine.augment`: same
parameter names, same ranges, same probability semantics (each sample is transformed with
probability p, independently), same rounding to uint8 after each step. To keep one definition of
each parameter, an op is built from the albumentations object itself: the step's params go through
`engine.augment.make_transform`, so albumentations validates them and normalises their forms (a
scalar limit becomes a symmetric range, ShiftScaleRotate's scale_limit is biased by 1, ...), and the
op reads the normalised ranges off that object. A param value whose meaning we do not reproduce
(cubic interpolation, wrap borders, inpainting, ...) makes `why_not` return a reason; the run then
uses the albumentations CPU path and says why (engine.training.fastpath).

Every op splits into `sample(n, gen, device)` -> per-sample parameters (tensors) and
`apply(x, params)` -> uint8 NHWC. Only tensor ops, no host syncs, so a whole epoch of augmentation
can be queued on the GPU ahead of the model. tests/test_batch_augment.py compares `apply` with
albumentations' own `apply` for the same parameters, and `sample` with albumentations' draws.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

Params = dict[str, torch.Tensor]

# OpenCV flag values (albumentations takes cv2 constants; we avoid importing cv2 for them)
INTER_NEAREST, INTER_LINEAR = 0, 1
BORDER_CONSTANT, BORDER_REPLICATE, BORDER_REFLECT, BORDER_WRAP, BORDER_REFLECT_101 = 0, 1, 2, 3, 4
_BORDER_NAMES = {0: "constant", 1: "replicate", 2: "reflect", 3: "wrap", 4: "reflect_101"}


class Unsupported(ValueError):
    """A step the batched path does not reproduce; the message names the transform and the param."""


# ------------------------------------------------------------------------------- helpers
def _uniform(n: int, lo: float, hi: float, gen, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (hi - lo) + lo


def _randint(n: int, lo: int, hi: int, gen, device) -> torch.Tensor:
    """Integers in [lo, hi], both ends included (Python's random.randint)."""
    return torch.randint(int(lo), int(hi) + 1, (n,), generator=gen, device=device)


def _per_sample(v: torch.Tensor, ndim: int = 4) -> torch.Tensor:
    return v.view(-1, *([1] * (ndim - 1)))


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(_per_sample(mask, a.ndim), a, b)


def _round_u8(x: torch.Tensor) -> torch.Tensor:
    """float -> uint8 the way OpenCV's saturate_cast does it (round half to even, clip)."""
    return x.round().clamp_(0, 255).to(torch.uint8)


def _trunc_u8(x: torch.Tensor) -> torch.Tensor:
    """float -> uint8 the way albucore's lookup tables do it (clip, then truncate)."""
    return x.clamp(0, 255).to(torch.uint8)


def _gray_weighted(x: torch.Tensor) -> torch.Tensor:
    """OpenCV's RGB2GRAY for uint8, bit-exact: (9798 R + 19235 G + 3735 B + 2^14) >> 15. (N,H,W,3) -> (N,H,W)."""
    xi = x.to(torch.int32)
    return ((xi[..., 0] * 9798 + xi[..., 1] * 19235 + xi[..., 2] * 3735 + 16384) >> 15).to(torch.uint8)


_CONSTANTS: dict[tuple, torch.Tensor] = {}


def _const(values, device, dtype=torch.float32) -> torch.Tensor:
    """A small constant tensor, made once per device: torch.tensor(list, device=cuda) is a synchronous
    host-to-device copy, which in a step loop would stall the CPU until the GPU catches up."""
    key = (tuple(values), str(device), dtype)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(list(values), dtype=dtype, device=device)
    return _CONSTANTS[key]


def _fill_values(fill, channels: int | None, name: str) -> list[float]:
    if isinstance(fill, (int, float)):
        return [float(fill)] * (channels or 1)
    if isinstance(fill, (tuple, list)) and all(isinstance(v, (int, float)) for v in fill):
        if channels is not None and len(fill) not in (1, channels):
            raise Unsupported(f"{name}: fill has {len(fill)} values for {channels}-channel images")
        return [float(v) for v in fill] * (channels if len(fill) == 1 and channels else 1)
    raise Unsupported(f"{name}: fill={fill!r} has no batched version (numbers only)")


def _grid_sample_u8(x, grid, interpolation, border, fill, align) -> torch.Tensor:
    """uint8 NHWC sampled at a normalised grid (N, H, W, 2) -> uint8 NHWC, like cv2.remap / warpAffine.

    Pixel centres sit at integer coordinates. grid_sample's padding modes give OpenCV's borders:
    zeros (+ fill) = BORDER_CONSTANT, border = REPLICATE, reflection with align_corners=True =
    REFLECT_101 (mirror about the edge pixels), with align_corners=False = REFLECT (mirror about the
    edges). For bilinear sampling, mirroring the coordinate equals mirroring the pixel indices.
    """
    n, h, w, c = x.shape
    xf = x.permute(0, 3, 1, 2).float()
    fill_t = None
    if border == BORDER_CONSTANT and any(fill):
        fill_t = _const(fill[:c] if len(fill) >= c else fill * c, x.device).view(1, c, 1, 1)
        xf = xf - fill_t  # sample (x - fill) with zero padding, add fill back: linear, so exact
    padding = {BORDER_CONSTANT: "zeros", BORDER_REPLICATE: "border"}.get(border, "reflection")
    out = F.grid_sample(
        xf,
        grid,
        mode="nearest" if interpolation == INTER_NEAREST else "bilinear",
        padding_mode=padding,
        align_corners=align,
    )
    if fill_t is not None:
        out = out + fill_t
    return _round_u8(out).permute(0, 2, 3, 1).contiguous()


# ------------------------------------------------------------------------------- the ops
class BatchOp:
    """One augmentation step, batched. Subclasses define _sample (params) and _transform (all samples)."""

    name = ""

    def __init__(self, p: float):
        self.p = float(p)

    def sample(self, n: int, gen: torch.Generator | None, device) -> Params:
        params = {"apply": torch.rand(n, generator=gen, device=device) < self.p}
        params.update(self._sample(n, gen, device))
        return params

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """Transform the samples whose params["apply"] is True; leave the others as they are."""
        return _where(params["apply"], self._transform(x, params), x)

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        if self.p <= 0:
            return x
        return self.apply(x, self.sample(len(x), gen, x.device))

    def _sample(self, n, gen, device) -> Params:
        return {}

    def _transform(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        raise NotImplementedError


class HorizontalFlip(BatchOp):
    name = "HorizontalFlip"

    def _transform(self, x, params):
        return x.flip(2)


class VerticalFlip(BatchOp):
    name = "VerticalFlip"

    def _transform(self, x, params):
        return x.flip(1)


class RandomRotate90(BatchOp):
    """np.rot90(img, k), k uniform in {0, 1, 2, 3} (counter-clockwise, like albumentations)."""

    name = "RandomRotate90"

    def _sample(self, n, gen, device):
        return {"k": _randint(n, 0, 3, gen, device)}

    def _transform(self, x, params):
        out = x
        for k in (1, 2, 3):
            out = _where(params["k"] == k, torch.rot90(x, k, dims=(1, 2)), out)
        return out


class PadRandomCrop(BatchOp):
    """engine.augment's PadRandomCrop: pad by `padding` with `fill`, crop back at a random offset."""

    name = "PadRandomCrop"

    def __init__(self, p, padding: int = 4, fill: float = 0):
        super().__init__(p)
        self.padding, self.fill = int(padding), fill

    def _sample(self, n, gen, device):
        return {
            "dy": _randint(n, 0, 2 * self.padding, gen, device),
            "dx": _randint(n, 0, 2 * self.padding, gen, device),
        }

    def _transform(self, x, params):
        n, h, w, _ = x.shape
        pad = self.padding
        big = F.pad(x, (0, 0, pad, pad, pad, pad), value=self.fill)
        rows = params["dy"].view(n, 1, 1) + torch.arange(h, device=x.device).view(1, h, 1)
        cols = params["dx"].view(n, 1, 1) + torch.arange(w, device=x.device).view(1, 1, w)
        return big[torch.arange(n, device=x.device).view(n, 1, 1), rows, cols]


class RandomResizedCrop(BatchOp):
    """Crop a random area (scale) and aspect ratio (ratio), resize back: albumentations' 10 tries, then
    its centre-crop fallback; resize like cv2.resize (half-pixel centres, clamped to the crop)."""

    name = "RandomResizedCrop"

    def __init__(self, p, shape, scale, ratio, interpolation):
        super().__init__(p)
        self.h, self.w = shape
        self.scale, self.ratio, self.interpolation = tuple(scale), tuple(ratio), interpolation
        h, w = self.h, self.w
        in_ratio = w / h  # the fallback crop, fixed by the image shape
        if in_ratio < self.ratio[0]:
            fw, fh = w, round(w / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            fh, fw = h, round(h * self.ratio[1])
        else:
            fw, fh = w, h
        self.fallback = ((h - fh) // 2, (w - fw) // 2, fh, fw)

    def _sample(self, n, gen, device):
        h, w, tries = self.h, self.w, 10
        area = h * w
        target = (
            torch.rand(n, tries, generator=gen, device=device, dtype=torch.float64)
            * (self.scale[1] - self.scale[0])
            * area
            + self.scale[0] * area
        )
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(
            torch.rand(n, tries, generator=gen, device=device, dtype=torch.float64) * (log_hi - log_lo) + log_lo
        )
        cw, ch = torch.sqrt(target * aspect).round(), torch.sqrt(target / aspect).round()
        ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
        first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first try that fits
        found = ok.any(dim=1)
        cw, ch = cw.gather(1, first).squeeze(1), ch.gather(1, first).squeeze(1)
        fy, fx, fh, fw = self.fallback
        ch = torch.where(found, ch, torch.full_like(ch, fh)).long()
        cw = torch.where(found, cw, torch.full_like(cw, fw)).long()
        hs = torch.rand(n, generator=gen, device=device, dtype=torch.float64)
        ws = torch.rand(n, generator=gen, device=device, dtype=torch.float64)
        y0 = torch.minimum(((h - ch + 1) * hs).floor().long(), h - ch)
        x0 = torch.minimum(((w - cw + 1) * ws).floor().long(), w - cw)
        y0 = torch.where(found, y0, torch.full_like(y0, fy))
        x0 = torch.where(found, x0, torch.full_like(x0, fx))
        return {"y0": y0, "x0": x0, "crop_h": ch, "crop_w": cw}

    def _transform(self, x, params):
        n, h, w, _ = x.shape
        dev = x.device
        ch, cw = params["crop_h"].double().view(n, 1), params["crop_w"].double().view(n, 1)
        i = torch.arange(h, device=dev, dtype=torch.float64).view(1, h)
        j = torch.arange(w, device=dev, dtype=torch.float64).view(1, w)
        if self.interpolation == INTER_NEAREST:  # cv2 INTER_NEAREST: floor(dst * src/dst), no half-pixel shift
            sy = torch.minimum((i * ch / h).floor(), ch - 1)
            sx = torch.minimum((j * cw / w).floor(), cw - 1)
        else:
            sy = ((i + 0.5) * ch / h - 0.5).clamp(min=0)
            sy = torch.minimum(sy, ch - 1)
            sx = ((j + 0.5) * cw / w - 0.5).clamp(min=0)
            sx = torch.minimum(sx, cw - 1)
        # pixel -> normalised (align_corners) per row and per column, then broadcast to the grid
        gx = (2 * (sx + params["x0"].view(n, 1)) / max(w - 1, 1) - 1).float().view(n, 1, w).expand(n, h, w)
        gy = (2 * (sy + params["y0"].view(n, 1)) / max(h - 1, 1) - 1).float().view(n, h, 1).expand(n, h, w)
        return _grid_sample_u8(x, torch.stack([gx, gy], dim=-1), self.interpolation, BORDER_REPLICATE, [0.0], True)


class AffineWarp(BatchOp):
    """Affine / ShiftScaleRotate / Rotate: albumentations' matrix (about the image centre
    (w/2 - 0.5, h/2 - 0.5)): M = centre . translate . shear . rotate . scale . centre^-1, applied
    like cv2.warpAffine (each output pixel samples the input at M^-1 of its position)."""

    def __init__(
        self,
        p,
        name,
        shape,
        *,
        scale,
        keep_ratio,
        balanced_scale,
        translate_percent,
        translate_px,
        rotate,
        shear,
        interpolation,
        border_mode,
        fill,
    ):
        super().__init__(p)
        self.name = name
        self.h, self.w = shape
        self.scale, self.keep_ratio, self.balanced_scale = scale, keep_ratio, balanced_scale
        self.translate_percent, self.translate_px = translate_percent, translate_px
        self.rotate, self.shear = tuple(rotate), shear
        self.interpolation, self.border_mode, self.fill = interpolation, border_mode, fill

    def _scale(self, lo, hi, n, gen, device):
        if not self.balanced_scale:
            return _uniform(n, lo, hi, gen, device)
        # balanced: pick the zoom-out half [lo, 1) or the zoom-in half (1, hi] with equal chance
        if lo < 1 < hi:
            down, up = _uniform(n, lo, 1.0, gen, device), _uniform(n, 1.0, hi, gen, device)
            return torch.where(torch.rand(n, generator=gen, device=device) < 0.5, down, up)
        if lo < 1:
            return _uniform(n, lo, 1.0, gen, device)
        if hi > 1:
            return _uniform(n, 1.0, hi, gen, device)
        return torch.ones(n, device=device)

    def _sample(self, n, gen, device):
        if self.translate_px is not None:
            tx = _randint(n, int(self.translate_px["x"][0]), int(self.translate_px["x"][1]), gen, device).float()
            ty = _randint(n, int(self.translate_px["y"][0]), int(self.translate_px["y"][1]), gen, device).float()
        elif self.translate_percent is not None:  # int() of a fraction of the size: truncation toward 0
            tx = (_uniform(n, *self.translate_percent["x"], gen, device) * self.w).trunc()
            ty = (_uniform(n, *self.translate_percent["y"], gen, device) * self.h).trunc()
        else:
            tx = ty = torch.zeros(n, device=device)
        shear_x = -_uniform(n, *self.shear["x"], gen, device)  # albumentations negates the sampled shear
        shear_y = -_uniform(n, *self.shear["y"], gen, device)
        sx = self._scale(*self.scale["x"], n, gen, device)
        sy = sx if self.keep_ratio else self._scale(*self.scale["y"], n, gen, device)
        angle = _uniform(n, *self.rotate, gen, device)
        return {
            "tx": tx,
            "ty": ty,
            "shear_x": shear_x,
            "shear_y": shear_y,
            "scale_x": sx,
            "scale_y": sy,
            "angle": angle,
        }

    def _transform(self, x, params):
        n, h, w, c = x.shape
        a = torch.deg2rad(params["angle"].double())
        cos, sin = torch.cos(a), torch.sin(a)
        kx, ky = (
            torch.tan(torch.deg2rad(params["shear_x"].double())),
            torch.tan(torch.deg2rad(params["shear_y"].double())),
        )
        sx, sy = params["scale_x"].double(), params["scale_y"].double()
        # A = shear @ rotate @ scale, with rotate = [[cos, sin], [-sin, cos]]
        r00, r01, r10, r11 = cos * sx, sin * sy, -sin * sx, cos * sy
        a00, a01 = r00 + kx * r10, r01 + kx * r11
        a10, a11 = ky * r00 + r10, ky * r01 + r11
        det = a00 * a11 - a01 * a10
        i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
        # In pixels: src = A^-1 (dst - centre - t) + centre, centre = ((w-1)/2, (h-1)/2). grid_sample works in
        # normalised coordinates x_n = (x - centre_x) / d_x with d = (w-1)/2 (align_corners) or w/2 (REFLECT),
        # so src_n = D^-1 A^-1 D dst_n - D^-1 A^-1 t: one affine_grid per batch.
        align = self.border_mode != BORDER_REFLECT
        dx, dy = ((w - 1) / 2, (h - 1) / 2) if align else (w / 2, h / 2)
        dx, dy = max(dx, 0.5), max(dy, 0.5)
        tx, ty = params["tx"].double(), params["ty"].double()
        theta = torch.stack(
            [
                torch.stack([i00, i01 * dy / dx, -(i00 * tx + i01 * ty) / dx], dim=1),
                torch.stack([i10 * dx / dy, i11, -(i10 * tx + i11 * ty) / dy], dim=1),
            ],
            dim=1,
        ).float()
        grid = F.affine_grid(theta, [n, c, h, w], align_corners=align)
        return _grid_sample_u8(x, grid, self.interpolation, self.border_mode, self.fill, align)


class RandomBrightnessContrast(BatchOp):
    """out = clip(alpha * x + beta) truncated, alpha = 1 + U(contrast_limit), beta = U(brightness_limit) * 255
    (or * the image's mean when brightness_by_max is False): albucore's uint8 lookup table, in float32."""

    name = "RandomBrightnessContrast"

    def __init__(self, p, brightness_limit, contrast_limit, brightness_by_max, ensure_safe_range):
        super().__init__(p)
        self.brightness_limit, self.contrast_limit = tuple(brightness_limit), tuple(contrast_limit)
        self.brightness_by_max, self.ensure_safe_range = brightness_by_max, ensure_safe_range

    def _sample(self, n, gen, device):
        return {
            "alpha": 1.0 + _uniform(n, *self.contrast_limit, gen, device),
            "beta": _uniform(n, *self.brightness_limit, gen, device),
        }

    def _transform(self, x, params):
        alpha, beta = params["alpha"], params["beta"]
        if self.brightness_by_max:
            beta = beta * 255.0
        else:
            beta = beta * x.float().mean(dim=(1, 2, 3))
        if self.ensure_safe_range:  # albumentations' get_safe_brightness_contrast_params
            pos = alpha > 0
            safe_beta_pos = beta.clamp(0, 255)
            safe_beta_neg = beta.clamp(max=255)
            beta = torch.where(pos, safe_beta_pos, safe_beta_neg)
            alpha = torch.where(pos, torch.minimum(alpha, (255 - beta) / 255), torch.maximum(alpha, -beta / 255))
        return _trunc_u8(x.float() * _per_sample(alpha) + _per_sample(beta))


class ColorJitter(BatchOp):
    """torchvision-style brightness, contrast, saturation, hue factors, applied in a random order per
    sample, each rounded to uint8 as albumentations does (hue through OpenCV's 8-bit HSV)."""

    name = "ColorJitter"

    def __init__(self, p, brightness, contrast, saturation, hue):
        super().__init__(p)
        self.ranges = [tuple(brightness), tuple(contrast), tuple(saturation), tuple(hue)]

    def _sample(self, n, gen, device):
        factors = [_uniform(n, lo, hi, gen, device) for lo, hi in self.ranges]
        order = torch.rand(n, 4, generator=gen, device=device).argsort(dim=1)  # a uniform random permutation
        return {
            "brightness": factors[0],
            "contrast": factors[1],
            "saturation": factors[2],
            "hue": factors[3],
            "order": order,
        }

    def _transform(self, x, params):
        ops = [self._brightness, self._contrast, self._saturation, self._hue]
        keys = ["brightness", "contrast", "saturation", "hue"]
        grey = x.shape[-1] == 1
        for pos in range(4):
            for k, (op, key) in enumerate(zip(ops, keys)):
                lo, hi = self.ranges[k]
                if (key in ("saturation", "hue") and grey) or (lo == hi == (0.0 if key == "hue" else 1.0)):
                    continue  # identity for every sample
                x = _where(params["order"][:, pos] == k, op(x, params[key]), x)
        return x

    @staticmethod
    def _brightness(x, f):
        return _trunc_u8(x.float() * _per_sample(f))

    @staticmethod
    def _contrast(x, f):
        gray = x if x.shape[-1] == 1 else _gray_weighted(x).unsqueeze(-1)
        mean = gray.float().mean(dim=(1, 2, 3))
        return _trunc_u8(x.float() * _per_sample(f) + _per_sample(mean * (1 - f)))

    @staticmethod
    def _saturation(x, f):
        gray = _gray_weighted(x).unsqueeze(-1).float()
        f = _per_sample(f)
        return _round_u8(x.float() * f + gray * (1 - f))

    @staticmethod
    def _hue(x, f):
        h, s, v = _rgb_to_hsv_u8(x)
        h = torch.remainder(h + 180.0 * _per_sample(f, 3), 180.0).floor()
        return _hsv_u8_to_rgb(h, s, v)


def _rgb_to_hsv_u8(x: torch.Tensor):
    """OpenCV's 8-bit RGB2HSV, bit-exact: H in [0, 180) (2 degrees a step), S and V in [0, 255] (as floats).

    OpenCV divides through fixed-point tables (hsv_shift 12): sdiv[v] = rint(255 * 2^12 / v) and
    hdiv[d] = rint(180 * 2^12 / (6 d)); computing the entries in float64 gives the same integers."""
    xi = x.to(torch.int32)
    r, g, b = xi[..., 0], xi[..., 1], xi[..., 2]
    v = xi.amax(dim=-1)
    diff = v - xi.amin(dim=-1)
    sdiv = torch.where(v > 0, torch.round((255 << 12) / v.clamp(min=1).double()), 0).to(torch.int32)
    hdiv = torch.where(diff > 0, torch.round((180 << 12) / (6.0 * diff.clamp(min=1).double())), 0).to(torch.int32)
    s = (diff * sdiv + (1 << 11)) >> 12
    raw = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (raw * hdiv + (1 << 11)) >> 12
    h = torch.where(h < 0, h + 180, h)
    return h.float(), s.float(), v.float()


_HSV_SECTORS = ((0, 3, 1), (2, 0, 1), (1, 0, 3), (1, 2, 0), (3, 1, 0), (0, 1, 2))  # per sector: r, g, b picks


def _hsv_u8_to_rgb(h, s, v) -> torch.Tensor:
    """OpenCV's HSV2RGB for 8-bit H (0..179), S, V -> uint8 RGB."""
    s, v = s / 255.0, v / 255.0
    hh = h * (6.0 / 180.0)
    hh = torch.remainder(hh, 6.0)
    sector = hh.floor().clamp(0, 5)
    frac = hh - sector
    tab = torch.stack([v, v * (1 - s), v * (1 - s * frac), v * (1 - s * (1 - frac))], dim=-1)
    table = _const([i for row in _HSV_SECTORS for i in row], h.device, torch.long).view(6, 3)
    picks = table[sector.long()]
    rgb = tab.gather(-1, picks)
    rgb = torch.where((s == 0).unsqueeze(-1), v.unsqueeze(-1).expand_as(rgb), rgb)
    return _round_u8(rgb * 255.0)


class ToGray(BatchOp):
    name = "ToGray"

    def __init__(self, p, method: str):
        super().__init__(p)
        self.method = method

    def _transform(self, x, params):
        c = x.shape[-1]
        if c == 1:
            return x  # already grey (albumentations warns and returns it)
        if self.method == "weighted_average":
            g = _gray_weighted(x)
        elif self.method == "average":
            g = (x.to(torch.int32).sum(dim=-1) // c).to(torch.uint8)
        elif self.method == "max":
            g = x.amax(dim=-1)
        else:  # desaturation: (max + min) / 2, truncated
            g = ((x.amax(dim=-1).to(torch.int32) + x.amin(dim=-1).to(torch.int32)) // 2).to(torch.uint8)
        return g.unsqueeze(-1).expand_as(x).contiguous()


class Solarize(BatchOp):
    """Invert pixels >= threshold * 255, threshold ~ U(threshold_range)."""

    name = "Solarize"

    def __init__(self, p, threshold_range):
        super().__init__(p)
        self.threshold_range = tuple(threshold_range)

    def _sample(self, n, gen, device):
        return {"threshold": _uniform(n, *self.threshold_range, gen, device)}

    def _transform(self, x, params):
        return torch.where(x.float() >= _per_sample(params["threshold"]) * 255.0, 255 - x, x)


def _gaussian_size(sigma: float, ksize: int) -> int:
    size = int(sigma * 3.5) * 2 + 1 if ksize == 0 else ksize
    return size + 1 if size % 2 == 0 else size


class GaussianBlur(BatchOp):
    """Separable Gaussian blur, sigma ~ U(sigma_limit), size ~ randint(blur_limit) (0: from sigma, even: +1),
    kernel exp(-x^2 / 2 sigma^2) over x = -size//2 .. size//2, normalised; borders REFLECT_101."""

    name = "GaussianBlur"

    def __init__(self, p, blur_limit, sigma_limit):
        super().__init__(p)
        self.blur_limit, self.sigma_limit = tuple(int(b) for b in blur_limit), tuple(sigma_limit)
        sizes = [_gaussian_size(self.sigma_limit[1], 0)] if self.blur_limit[0] == 0 else []
        self.max_size = max(sizes + [_gaussian_size(0, max(self.blur_limit[1], 1))])

    def _sample(self, n, gen, device):
        return {
            "sigma": _uniform(n, *self.sigma_limit, gen, device),
            "ksize": _randint(n, *self.blur_limit, gen, device),
        }

    def kernels(self, params: Params) -> torch.Tensor:
        """(n, max_size) per-sample 1-D kernels, zero beyond each sample's own radius."""
        sigma = params["sigma"].double()
        k = params["ksize"]
        size = torch.where(k == 0, (sigma * 3.5).floor().long() * 2 + 1, k)
        size = size + (size % 2 == 0).long()
        r = self.max_size // 2
        xs = torch.arange(-r, r + 1, device=sigma.device, dtype=torch.float64).view(1, -1)
        inside = xs.abs() <= (size // 2).view(-1, 1)
        kern = torch.exp(-0.5 * (xs / sigma.view(-1, 1)) ** 2) * inside
        return (kern / kern.sum(dim=1, keepdim=True)).float()

    def _transform(self, x, params):
        n, h, w, c = x.shape
        r = self.max_size // 2
        kern = self.kernels(params).repeat_interleave(c, dim=0)  # (n*c, K)
        xf = x.permute(0, 3, 1, 2).reshape(1, n * c, h, w).float()
        xf = F.pad(xf, (r, r, r, r), mode="reflect")  # torch's reflect is OpenCV's REFLECT_101
        xf = F.conv2d(xf, kern.view(n * c, 1, 1, -1), groups=n * c)
        xf = F.conv2d(xf, kern.view(n * c, 1, -1, 1), groups=n * c)
        return _round_u8(xf.view(n, c, h, w)).permute(0, 2, 3, 1).contiguous()


class _Holes(BatchOp):
    """Shared by CoarseDropout and Erasing: per-sample rectangles (slots beyond a sample's count are empty)
    filled with a value, a per-channel value, random pixels ("random") or one random colour per hole
    ("random_uniform"); later holes paint over earlier ones."""

    def __init__(self, p, shape, channels, fill):
        super().__init__(p)
        self.h, self.w = shape
        self.channels = channels or 4  # random fills draw 4 channels when the count is not known yet
        self.fill_mode = fill if isinstance(fill, str) else "value"
        self.fill = None if isinstance(fill, str) else _fill_values(fill, channels, self.name)

    def _holes(self, n, gen, device) -> Params:
        raise NotImplementedError

    def _sample(self, n, gen, device):
        holes = self._holes(n, gen, device)
        if self.fill_mode == "random_uniform":
            k = holes["y0"].shape[1]
            holes["colour"] = torch.randint(
                0, 256, (n, k, self.channels), generator=gen, device=device, dtype=torch.uint8
            )
        elif self.fill_mode == "random":
            holes["noise"] = torch.randint(
                0, 256, (n, self.h, self.w, self.channels), generator=gen, device=device, dtype=torch.uint8
            )
        return holes

    def masks(self, params: Params, h: int, w: int) -> torch.Tensor:
        """(n, k, h, w) bool: which pixels each hole covers."""
        y0, x0, y1, x1 = params["y0"], params["x0"], params["y1"], params["x1"]
        dev = y0.device
        rows = torch.arange(h, device=dev).view(1, 1, h)
        cols = torch.arange(w, device=dev).view(1, 1, w)
        in_rows = (rows >= y0.unsqueeze(-1)) & (rows < y1.unsqueeze(-1))
        in_cols = (cols >= x0.unsqueeze(-1)) & (cols < x1.unsqueeze(-1))
        return in_rows.unsqueeze(-1) & in_cols.unsqueeze(-2)

    def _transform(self, x, params):
        n, h, w, c = x.shape
        per_hole = self.masks(params, h, w)
        covered = per_hole.any(dim=1).unsqueeze(-1)  # (n, h, w, 1)
        if self.fill_mode == "value":
            value = _const([min(max(round(v), 0), 255) for v in self.fill[:c]], x.device, torch.uint8)
            return torch.where(covered, value.view(1, 1, 1, -1).expand_as(x), x)
        if self.fill_mode == "random":
            return torch.where(covered, params["noise"][..., :c], x)
        out = x  # random_uniform: the last hole covering a pixel gives its colour
        colour = params["colour"][..., :c]
        for k in range(per_hole.shape[1]):
            out = torch.where(per_hole[:, k].unsqueeze(-1), colour[:, k].view(n, 1, 1, c), out)
        return out


class CoarseDropout(_Holes):
    name = "CoarseDropout"

    def __init__(self, p, shape, channels, num_holes_range, hole_height_range, hole_width_range, fill):
        super().__init__(p, shape, channels, fill)
        self.num_holes_range = tuple(int(v) for v in num_holes_range)
        self.hole_height_range, self.hole_width_range = tuple(hole_height_range), tuple(hole_width_range)

    def _holes(self, n, gen, device):
        h, w = self.h, self.w
        k = self.num_holes_range[1]
        count = _randint(n, *self.num_holes_range, gen, device)
        if self.hole_height_range[1] >= 1:  # pixel sizes (albumentations decides on the height range)
            hh = _randint(n * k, int(self.hole_height_range[0]), int(min(self.hole_height_range[1], h)), gen, device)
            hw = _randint(n * k, int(self.hole_width_range[0]), int(min(self.hole_width_range[1], w)), gen, device)
        else:  # fractions of the image size, truncated
            hh = (h * _uniform(n * k, *self.hole_height_range, gen, device).double()).long()
            hw = (w * _uniform(n * k, *self.hole_width_range, gen, device).double()).long()
        hh, hw = hh.view(n, k), hw.view(n, k)
        y0 = torch.minimum(
            (torch.rand(n, k, generator=gen, device=device, dtype=torch.float64) * (h - hh + 1)).long(), h - hh
        )
        x0 = torch.minimum(
            (torch.rand(n, k, generator=gen, device=device, dtype=torch.float64) * (w - hw + 1)).long(), w - hw
        )
        used = torch.arange(k, device=device).view(1, k) < count.view(n, 1)
        y1 = torch.where(used, y0 + hh, y0)  # an unused slot is an empty rectangle
        return {"count": count, "y0": y0, "x0": x0, "y1": y1, "x1": x0 + hw}


class Erasing(_Holes):
    """Random erasing: one hole of area ~ U(min, max valid area), aspect ~ U(valid ratio range)."""

    name = "Erasing"

    def __init__(self, p, shape, channels, scale, ratio, fill):
        super().__init__(p, shape, channels, fill)
        self.scale, self.ratio = tuple(scale), tuple(ratio)

    def _holes(self, n, gen, device):
        h, w = self.h, self.w
        total = h * w
        min_area, max_area = total * self.scale[0], total * self.scale[1]
        r_min, r_max = self.ratio
        max_valid = min(max_area, min(r_min * h * h, r_max * h * h), min(w * w / r_min, w * w / r_max))
        zero = torch.zeros(n, 1, dtype=torch.long, device=device)
        if max_valid < min_area:  # no valid hole for this image size: albumentations erases nothing
            return {"y0": zero, "x0": zero, "y1": zero, "x1": zero}
        area = torch.rand(n, generator=gen, device=device, dtype=torch.float64) * (max_valid - min_area) + min_area
        hi_r = torch.clamp(w * w / area, max=r_max)
        lo_r = torch.clamp(area / (h * h), min=r_min)
        ok = lo_r <= hi_r
        aspect = torch.rand(n, generator=gen, device=device, dtype=torch.float64) * (hi_r - lo_r) + lo_r
        eh = torch.sqrt(area / aspect).round().long().clamp(0, h)
        ew = torch.sqrt(area * aspect).round().long().clamp(0, w)
        top = torch.minimum(
            (torch.rand(n, generator=gen, device=device, dtype=torch.float64) * (h - eh + 1)).long(), h - eh
        )
        left = torch.minimum(
            (torch.rand(n, generator=gen, device=device, dtype=torch.float64) * (w - ew + 1)).long(), w - ew
        )
        eh = torch.where(ok, eh, torch.zeros_like(eh))
        return {"y0": top.view(n, 1), "x0": left.view(n, 1), "y1": (top + eh).view(n, 1), "x1": (left + ew).view(n, 1)}


# ------------------------------------------------------------------------------- builders
# What each builder reproduces. Params not listed make the step fall back to the CPU path.
# (mask_* / fill_mask / rotate_method only concern masks and boxes, which classification never has.)
SUPPORTED_PARAMS: dict[str, set[str]] = {
    "HorizontalFlip": set(),
    "VerticalFlip": set(),
    "RandomRotate90": set(),
    "PadRandomCrop": {"padding", "fill"},
    "RandomResizedCrop": {"size", "scale", "ratio", "interpolation", "mask_interpolation", "area_for_downscale"},
    "Affine": {
        "scale",
        "translate_percent",
        "translate_px",
        "rotate",
        "shear",
        "interpolation",
        "mask_interpolation",
        "fit_output",
        "keep_ratio",
        "rotate_method",
        "balanced_scale",
        "border_mode",
        "fill",
        "fill_mask",
    },
    "ShiftScaleRotate": {
        "shift_limit",
        "scale_limit",
        "rotate_limit",
        "interpolation",
        "border_mode",
        "shift_limit_x",
        "shift_limit_y",
        "rotate_method",
        "mask_interpolation",
        "fill",
        "fill_mask",
    },
    "Rotate": {
        "limit",
        "interpolation",
        "border_mode",
        "rotate_method",
        "crop_border",
        "mask_interpolation",
        "fill",
        "fill_mask",
    },
    "RandomBrightnessContrast": {"brightness_limit", "contrast_limit", "brightness_by_max", "ensure_safe_range"},
    "ColorJitter": {"brightness", "contrast", "saturation", "hue"},
    "ToGray": {"num_output_channels", "method"},
    "Solarize": {"threshold_range"},
    "GaussianBlur": {"blur_limit", "sigma_limit"},
    "CoarseDropout": {"num_holes_range", "hole_height_range", "hole_width_range", "fill", "fill_mask"},
    "Erasing": {"scale", "ratio", "fill", "fill_mask"},
}


def _check_interp_border(name, t):
    if t.interpolation not in (INTER_NEAREST, INTER_LINEAR):
        raise Unsupported(f"{name}: interpolation={t.interpolation} has no batched version (0 nearest or 1 linear)")
    if t.border_mode not in (BORDER_CONSTANT, BORDER_REPLICATE, BORDER_REFLECT, BORDER_REFLECT_101):
        raise Unsupported(
            f"{name}: border_mode={t.border_mode} ({_BORDER_NAMES.get(t.border_mode, '?')}) has no batched version"
        )


def _build_affine(name, t, p, shape, channels):
    _check_interp_border(name, t)
    fill = _fill_values(t.fill, channels, name)
    if name == "Rotate":
        if t.crop_border:
            raise Unsupported("Rotate: crop_border=True changes the image size; the fast path keeps shapes static")
        zero = {"x": (0.0, 0.0), "y": (0.0, 0.0)}
        return AffineWarp(
            p,
            name,
            shape,
            scale={"x": (1.0, 1.0), "y": (1.0, 1.0)},
            keep_ratio=False,
            balanced_scale=False,
            translate_percent=None,
            translate_px=None,
            rotate=t.limit,
            shear=zero,
            interpolation=t.interpolation,
            border_mode=t.border_mode,
            fill=fill,
        )
    if t.fit_output:
        raise Unsupported(f"{name}: fit_output=True changes the image size; the fast path keeps shapes static")
    return AffineWarp(
        p,
        name,
        shape,
        scale=t.scale,
        keep_ratio=t.keep_ratio,
        balanced_scale=t.balanced_scale,
        translate_percent=t.translate_percent,
        translate_px=t.translate_px,
        rotate=t.rotate,
        shear=t.shear,
        interpolation=t.interpolation,
        border_mode=t.border_mode,
        fill=fill,
    )


def _build_rrc(t, p, shape):
    if t.interpolation not in (INTER_NEAREST, INTER_LINEAR):
        raise Unsupported(
            f"RandomResizedCrop: interpolation={t.interpolation} has no batched version (0 nearest or 1 linear)"
        )
    if t.area_for_downscale is not None:
        raise Unsupported("RandomResizedCrop: area_for_downscale (INTER_AREA) has no batched version")
    if tuple(t.size) != tuple(shape):
        raise Unsupported(
            f"RandomResizedCrop: size {tuple(t.size)} differs from the training images {tuple(shape)}; "
            "the fast path keeps shapes static"
        )
    return RandomResizedCrop(p, shape, t.scale, t.ratio, t.interpolation)


def _build_to_gray(t, p, channels):
    if t.method not in ("weighted_average", "average", "max", "desaturation"):
        raise Unsupported(f"ToGray: method={t.method!r} has no batched version")
    if channels is not None and channels > 1 and t.num_output_channels != channels:
        raise Unsupported(f"ToGray: num_output_channels={t.num_output_channels} changes the channel count")
    return ToGray(p, t.method)


def _build_blur(t, p, shape):
    if t.sigma_limit[0] <= 0:
        raise Unsupported("GaussianBlur: a sigma of 0 has no batched version (sigma_limit must be > 0)")
    op = GaussianBlur(p, t.blur_limit, t.sigma_limit)
    if shape is not None and op.max_size // 2 >= min(shape):
        raise Unsupported(
            f"GaussianBlur: kernels up to {op.max_size} px are too large for {shape[0]}x{shape[1]} images"
        )
    return op


def _check_hole_fill(name, t):
    if isinstance(t.fill, str) and t.fill not in ("random", "random_uniform"):
        raise Unsupported(f"{name}: fill={t.fill!r} has no batched version")


def build_op(name: str, params: dict[str, Any], p: float, image_shape: tuple | None = None) -> BatchOp:
    """One step -> its batched op. image_shape: (H, W) or (H, W, C) of the training images (None: not
    known yet; shape-dependent checks are skipped, and ops that need it use a placeholder).
    Raises Unsupported (a ValueError) with the reason when the step has no batched version."""
    if name not in SUPPORTED_PARAMS:
        raise Unsupported(f"no batched version of {name}")
    extra = sorted(set(params) - SUPPORTED_PARAMS[name])
    if extra:
        raise Unsupported(f"{name}: param {', '.join(extra)} has no batched version")
    shape = tuple(image_shape[:2]) if image_shape is not None else None
    channels = int(image_shape[2]) if image_shape is not None and len(image_shape) > 2 else None
    params = dict(params)
    if name == "RandomResizedCrop" and "size" not in params:
        # engine.augment.build_pipeline fills in the training size the same way (a stand-in until it is known)
        params["size"] = list(shape) if shape is not None else [32, 32]
    if name == "RandomRotate90" and shape is not None and shape[0] != shape[1]:
        raise Unsupported("RandomRotate90: non-square images would change shape")
    if name in ("HorizontalFlip", "VerticalFlip", "RandomRotate90"):
        return {"HorizontalFlip": HorizontalFlip, "VerticalFlip": VerticalFlip, "RandomRotate90": RandomRotate90}[name](
            p
        )

    from engine.augment import make_transform

    t = make_transform(name, params, p)  # albumentations validates and normalises the params (ValueError if bad)
    if name == "PadRandomCrop":
        if not isinstance(t.fill, (int, float)):
            raise Unsupported("PadRandomCrop: fill must be a number")
        return PadRandomCrop(p, t.padding, t.fill)
    placeholder = shape or (32, 32)
    if name in ("Affine", "ShiftScaleRotate", "Rotate"):
        return _build_affine(name, t, p, placeholder, channels)
    if name == "RandomResizedCrop":
        return _build_rrc(t, p, shape or tuple(t.size))
    if name == "RandomBrightnessContrast":
        return RandomBrightnessContrast(
            p, t.brightness_limit, t.contrast_limit, t.brightness_by_max, t.ensure_safe_range
        )
    if name == "ColorJitter":
        if channels not in (None, 1, 3):
            raise Unsupported(f"ColorJitter: {channels}-channel images (albumentations takes 1 or 3)")
        return ColorJitter(p, t.brightness, t.contrast, t.saturation, t.hue)
    if name == "ToGray":
        return _build_to_gray(t, p, channels)
    if name == "Solarize":
        return Solarize(p, t.threshold_range)
    if name == "GaussianBlur":
        return _build_blur(t, p, shape)
    if name == "CoarseDropout":
        _check_hole_fill(name, t)
        return CoarseDropout(
            p, placeholder, channels, t.num_holes_range, t.hole_height_range, t.hole_width_range, t.fill
        )
    if name == "Erasing":
        _check_hole_fill(name, t)
        return Erasing(p, placeholder, channels, t.scale, t.ratio, t.fill)
    raise Unsupported(f"no batched version of {name}")  # listed in SUPPORTED_PARAMS but not built: a bug


def why_not(name: str, params: dict[str, Any], image_shape: tuple | None = None) -> str | None:
    """None when the step has a batched version (for images of this shape), else the reason."""
    try:
        build_op(name, dict(params or {}), 1.0, image_shape)
    except Unsupported as exc:
        return str(exc)
    except (ValueError, TypeError) as exc:  # params albumentations itself refuses
        return f"{name}: {str(exc)[:200]}"
    return None


def supports(name: str, params: dict[str, Any]) -> bool:
    return why_not(name, params) is None


# ------------------------------------------------------------------------------- pipelines
def _step_fields(step) -> tuple[str, float, dict]:
    if isinstance(step, dict):
        return step["name"], float(step.get("p", 0.5)), dict(step.get("params", {}))
    return step.name, float(step.p), dict(step.params)


class BatchPipeline:
    """The batched counterpart of engine.augment.build_pipeline: ops applied in order."""

    def __init__(self, ops: list[BatchOp]):
        self.ops = ops

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        for op in self.ops:
            x = op(x, gen)
        return x

    @property
    def names(self) -> list[str]:
        return [op.name for op in self.ops]


def build_batch_pipeline(steps, image_shape: tuple) -> BatchPipeline:
    """steps: AugmentStep objects or dicts (name, p, params). Raises Unsupported on the first step that has
    no batched version."""
    ops = []
    for step in steps or []:
        name, p, params = _step_fields(step)
        try:
            ops.append(build_op(name, params, p, image_shape))
        except Unsupported:
            raise
        except (ValueError, TypeError) as exc:
            raise Unsupported(f"{name}: {str(exc)[:200]}") from None
    return BatchPipeline(ops)


def make_step(step, image_size: int | tuple | None = None) -> BatchOp:
    """One step -> its batched op (image_size: an int for square images, or (H, W[, C]))."""
    name, p, params = _step_fields(step)
    shape = (image_size, image_size) if isinstance(image_size, int) else image_size
    return build_op(name, params, p, shape)


def preview(steps, images_uint8_nhwc: np.ndarray, seed: int) -> np.ndarray:
    """What the fast path makes of these images: the batched pipeline on CPU, seeded. uint8 NHWC in and out
    (N, H, W grey images are taken as one channel). Raises Unsupported when a step has no batched version."""
    x = np.asarray(images_uint8_nhwc)
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"preview takes uint8 (N, H, W, C) images, got {x.dtype} {x.shape}")
    pipeline = build_batch_pipeline(steps, x.shape[1:])
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        out = pipeline(torch.from_numpy(np.ascontiguousarray(x)), gen)
    return out.numpy()
