"""The batched ops: augmentations on uint8 NHWC tensors (CPU or GPU), with per-sample random parameters.

Each op gives a transform the same meaning as its albumentations namesake: same parameter ranges,
same probability semantics (each sample is transformed with probability p, independently), same
rounding to uint8 after each step. An op is built from the albumentations object itself (`build(t, p,
shape, channels)`), so albumentations validates the params and normalises their forms (a scalar limit
becomes a symmetric range, ShiftScaleRotate's scale_limit is biased by 1, ...) and the op reads the
normalised ranges off that object. A value whose meaning an op does not reproduce (cubic interpolation,
wrap borders, inpainting, ...) raises Unsupported with the reason.

Every op splits into `sample(n, gen, device)` -> per-sample parameters (tensors) and
`apply(x, params)` -> uint8 NHWC. Only tensor ops, no host syncs, so a whole epoch of augmentation
can be queued on the GPU ahead of the model. Which transform uses which op is declared in
`engine.augment.registry`.
"""

from __future__ import annotations

import math

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


def _check_interpolation(name, t):
    if t.interpolation not in (INTER_NEAREST, INTER_LINEAR):
        raise Unsupported(f"{name}: interpolation={t.interpolation} has no batched version (0 nearest or 1 linear)")


def _check_border(name, t):
    if t.border_mode not in (BORDER_CONSTANT, BORDER_REPLICATE, BORDER_REFLECT, BORDER_REFLECT_101):
        raise Unsupported(
            f"{name}: border_mode={t.border_mode} ({_BORDER_NAMES.get(t.border_mode, '?')}) has no batched version"
        )


def _check_hole_fill(name, t):
    if isinstance(t.fill, str) and t.fill not in ("random", "random_uniform"):
        raise Unsupported(f"{name}: fill={t.fill!r} has no batched version")


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

    @classmethod
    def build(cls, t, p: float, shape: tuple | None, channels: int | None) -> BatchOp:
        """The op for albumentations object `t` (its params already validated and normalised), for images
        of `shape` (H, W) with `channels` (None: not known yet, shape checks skipped). Raises Unsupported."""
        return cls(p)

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


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(2)


def vflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(1)


def rot90(k: int):
    """The view rotating uint8 NHWC by k * 90 degrees counter-clockwise (np.rot90, as albumentations)."""
    return lambda x: torch.rot90(x, k, dims=(1, 2))


def pad_crop(dy: int, dx: int, pad: int):
    """The view padding by `pad` (replicated edges) and cropping back to the size at offset (dy, dx)."""

    def view(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        big = F.pad(x.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate")
        return big.to(x.dtype).permute(0, 2, 3, 1)[:, dy : dy + h, dx : dx + w, :].contiguous()

    return view


class HorizontalFlip(BatchOp):
    name = "HorizontalFlip"

    def _transform(self, x, params):
        return hflip(x)


class VerticalFlip(BatchOp):
    name = "VerticalFlip"

    def _transform(self, x, params):
        return vflip(x)


class RandomRotate90(BatchOp):
    """np.rot90(img, k), k uniform in {0, 1, 2, 3} (counter-clockwise, like albumentations)."""

    name = "RandomRotate90"

    @classmethod
    def build(cls, t, p, shape, channels):
        if shape is not None and shape[0] != shape[1]:
            raise Unsupported("RandomRotate90: non-square images would change shape")
        return cls(p)

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

    @classmethod
    def build(cls, t, p, shape, channels):
        if not isinstance(t.fill, (int, float)):
            raise Unsupported("PadRandomCrop: fill must be a number")
        return cls(p, t.padding, t.fill)

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

    @classmethod
    def build(cls, t, p, shape, channels):
        _check_interpolation("RandomResizedCrop", t)
        if t.area_for_downscale is not None:
            raise Unsupported("RandomResizedCrop: area_for_downscale (INTER_AREA) has no batched version")
        shape = shape or tuple(t.size)
        if tuple(t.size) != tuple(shape):
            raise Unsupported(
                f"RandomResizedCrop: size {tuple(t.size)} differs from the training images {tuple(shape)}; "
                "the fast path keeps shapes static"
            )
        return cls(p, shape, t.scale, t.ratio, t.interpolation)

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

    @classmethod
    def build(cls, t, p, shape, channels):
        """Affine and ShiftScaleRotate (albumentations builds the latter as an Affine)."""
        name = type(t).__name__
        _check_interpolation(name, t)
        _check_border(name, t)
        if t.fit_output:
            raise Unsupported(f"{name}: fit_output=True changes the image size; the fast path keeps shapes static")
        ranges = dict(scale=t.scale, translate_percent=t.translate_percent, translate_px=t.translate_px)
        return cls(
            p,
            name,
            shape or (32, 32),
            **ranges,
            keep_ratio=t.keep_ratio,
            balanced_scale=t.balanced_scale,
            rotate=t.rotate,
            shear=t.shear,
            interpolation=t.interpolation,
            border_mode=t.border_mode,
            fill=_fill_values(t.fill, channels, name),
        )

    @classmethod
    def build_rotate(cls, t, p, shape, channels):
        """Rotate: an Affine with only the rotation."""
        _check_interpolation("Rotate", t)
        _check_border("Rotate", t)
        if t.crop_border:
            raise Unsupported("Rotate: crop_border=True changes the image size; the fast path keeps shapes static")
        same = {"x": (1.0, 1.0), "y": (1.0, 1.0)}
        return cls(
            p,
            "Rotate",
            shape or (32, 32),
            scale=same,
            keep_ratio=False,
            balanced_scale=False,
            translate_percent=None,
            translate_px=None,
            rotate=t.limit,
            shear={"x": (0.0, 0.0), "y": (0.0, 0.0)},
            interpolation=t.interpolation,
            border_mode=t.border_mode,
            fill=_fill_values(t.fill, channels, "Rotate"),
        )

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

    @classmethod
    def build(cls, t, p, shape, channels):
        return cls(p, t.brightness_limit, t.contrast_limit, t.brightness_by_max, t.ensure_safe_range)

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

    @classmethod
    def build(cls, t, p, shape, channels):
        if channels not in (None, 1, 3):
            raise Unsupported(f"ColorJitter: {channels}-channel images (albumentations takes 1 or 3)")
        return cls(p, t.brightness, t.contrast, t.saturation, t.hue)

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

    @classmethod
    def build(cls, t, p, shape, channels):
        if t.method not in ("weighted_average", "average", "max", "desaturation"):
            raise Unsupported(f"ToGray: method={t.method!r} has no batched version")
        if channels is not None and channels > 1 and t.num_output_channels != channels:
            raise Unsupported(f"ToGray: num_output_channels={t.num_output_channels} changes the channel count")
        return cls(p, t.method)

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

    @classmethod
    def build(cls, t, p, shape, channels):
        return cls(p, t.threshold_range)

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

    @classmethod
    def build(cls, t, p, shape, channels):
        if t.sigma_limit[0] <= 0:
            raise Unsupported("GaussianBlur: a sigma of 0 has no batched version (sigma_limit must be > 0)")
        op = cls(p, t.blur_limit, t.sigma_limit)
        if shape is not None and op.max_size // 2 >= min(shape):
            raise Unsupported(
                f"GaussianBlur: kernels up to {op.max_size} px are too large for {shape[0]}x{shape[1]} images"
            )
        return op

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

    @classmethod
    def build(cls, t, p, shape, channels):
        _check_hole_fill("CoarseDropout", t)
        holes = (t.num_holes_range, t.hole_height_range, t.hole_width_range)
        return cls(p, shape or (32, 32), channels, *holes, t.fill)

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

    @classmethod
    def build(cls, t, p, shape, channels):
        _check_hole_fill("Erasing", t)
        return cls(p, shape or (32, 32), channels, t.scale, t.ratio, t.fill)

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


class RandomGamma(BatchOp):
    """x -> trunc(255 * (x / 255) ** gamma), gamma ~ U(gamma_limit) / 100: albumentations' uint8 lookup table,
    one table per sample, in float64 like numpy."""

    name = "RandomGamma"

    def __init__(self, p, gamma_limit):
        super().__init__(p)
        self.gamma_limit = tuple(gamma_limit)

    @classmethod
    def build(cls, t, p, shape, channels):
        return cls(p, t.gamma_limit)

    def _sample(self, n, gen, device):
        lo, hi = self.gamma_limit
        u = torch.rand(n, generator=gen, device=device, dtype=torch.float64)
        return {"gamma": (u * (hi - lo) + lo) / 100.0}

    def _transform(self, x, params):
        n = x.shape[0]
        levels = torch.arange(256, device=x.device, dtype=torch.float64) * (1.0 / 255)
        tables = _trunc_u8(levels.view(1, 256) ** params["gamma"].view(n, 1) * 255)  # (n, 256)
        return tables.gather(1, x.reshape(n, -1).long()).view_as(x)


class NoOp(BatchOp):
    name = "NoOp"

    def _transform(self, x, params):
        return x


class Posterize(BatchOp):
    """Keep the num_bits highest bits of every channel, num_bits ~ randint(num_bits range)."""

    name = "Posterize"

    def __init__(self, p, num_bits):
        super().__init__(p)
        self.num_bits = tuple(int(b) for b in num_bits)

    @classmethod
    def build(cls, t, p, shape, channels):
        if isinstance(t.num_bits, list):
            raise Unsupported("Posterize: per-channel num_bits has no batched version")
        return cls(p, t.num_bits)

    def _sample(self, n, gen, device):
        return {"num_bits": _randint(n, *self.num_bits, gen, device)}

    def _transform(self, x, params):
        drop = (8 - params["num_bits"]).clamp(0, 8)
        mask = ((255 >> drop) << drop).to(torch.uint8)  # the kept high bits
        return x & _per_sample(mask)


def _cdf_stretch(x: torch.Tensor, auto_contrast: bool) -> torch.Tensor:
    """Histogram equalisation of every (image, channel): v -> round(255 (C(v) - C(lo)) / (N - C(lo))), with C
    the cumulative histogram, N its total and lo the darkest level present; a constant channel stays as it is.

    Equalize is OpenCV's equalizeHist (float32 scale 255 / (N - C(lo)), times the count). AutoContrast
    "cdf" is the same map as albumentations computes it: float32 (d * 255) / span, over a histogram whose
    range [0, 255) leaves out the level 255 (cv2.calcHist's upper bound is exclusive)."""
    n, h, w, c = x.shape
    flat = x.permute(0, 3, 1, 2).reshape(n * c, h * w)
    levels = torch.arange(256, device=x.device, dtype=torch.uint8).expand(n * c, 256).contiguous()
    # cumulative histogram by sorting (deterministic on CUDA, unlike scatter_add / bincount)
    cum = torch.searchsorted(flat.sort(dim=1).values, levels, right=True).float()
    if auto_contrast:
        cum[:, 255] = cum[:, 254]
    lo = (cum > 0).to(torch.uint8).argmax(1, keepdim=True)
    base = cum.gather(1, lo)
    span = cum[:, -1:] - base
    if auto_contrast:
        lut = (cum - base) * 255.0 / span.clamp(min=1)
    else:
        lut = (cum - base) * (torch.full_like(span, 255.0) / span.clamp(min=1))  # not 255 / span: torch's
        # scalar-over-tensor is 255 * (1 / span), one more float32 rounding than OpenCV's
    lut = lut.round().clamp(0, 255)
    lut = torch.where(span > 0, lut, torch.arange(256, device=x.device, dtype=lut.dtype).view(1, 256))
    out = lut.to(torch.uint8).gather(1, flat.long())
    return out.view(n, c, h, w).permute(0, 2, 3, 1).contiguous()


class Equalize(BatchOp):
    name = "Equalize"

    @classmethod
    def build(cls, t, p, shape, channels):
        if t.mode != "cv" or not t.by_channels or t.mask is not None:
            raise Unsupported("Equalize: only mode='cv', by_channels=True without a mask has a batched version")
        if channels not in (None, 1, 3):
            raise Unsupported(f"Equalize: {channels}-channel images (albumentations takes 1 or 3)")
        return cls(p)

    def _transform(self, x, params):
        return _cdf_stretch(x, auto_contrast=False)


class AutoContrast(BatchOp):
    name = "AutoContrast"

    @classmethod
    def build(cls, t, p, shape, channels):
        if t.cutoff or t.ignore is not None or t.method != "cdf":
            raise Unsupported("AutoContrast: only cutoff=0, ignore=None, method='cdf' has a batched version")
        return cls(p)

    def _transform(self, x, params):
        return _cdf_stretch(x, auto_contrast=True)


class Sharpen(BatchOp):
    """3x3 kernel (1 - alpha) I + alpha [[-1 -1 -1], [-1 8+lightness -1], [-1 -1 -1]], alpha ~ U(alpha),
    lightness ~ U(lightness), correlated like cv2.filter2D (REFLECT_101 borders, rounded to uint8)."""

    name = "Sharpen"

    def __init__(self, p, alpha, lightness):
        super().__init__(p)
        self.alpha, self.lightness = tuple(alpha), tuple(lightness)

    @classmethod
    def build(cls, t, p, shape, channels):
        if t.method != "kernel":
            raise Unsupported(f"Sharpen: method={t.method!r} has no batched version")
        return cls(p, t.alpha, t.lightness)

    def _sample(self, n, gen, device):
        return {"alpha": _uniform(n, *self.alpha, gen, device), "lightness": _uniform(n, *self.lightness, gen, device)}

    def kernels(self, params: Params) -> torch.Tensor:
        """(n, 3, 3) float32 kernels, as albumentations makes them."""
        a, light = params["alpha"].view(-1, 1, 1), params["lightness"].view(-1, 1, 1)
        centre = _const([0, 0, 0, 0, 1, 0, 0, 0, 0], a.device).view(3, 3)
        effect = _const([-1, -1, -1, -1, 8, -1, -1, -1, -1], a.device).view(3, 3)
        return (1 - a) * centre + a * (effect + light * centre)

    def _transform(self, x, params):
        n, h, w, c = x.shape
        kern = self.kernels(params).repeat_interleave(c, dim=0).unsqueeze(1)  # (n*c, 1, 3, 3)
        xf = F.pad(x.permute(0, 3, 1, 2).reshape(1, n * c, h, w).float(), (1, 1, 1, 1), mode="reflect")
        out = F.conv2d(xf, kern, groups=n * c)
        return _round_u8(out.view(n, c, h, w)).permute(0, 2, 3, 1).contiguous()


class SomeOf(BatchOp):
    """albumentations' SomeOf(replace=True): per sample, `k` of the ops picked uniformly with replacement,
    applied in index order (each op computed for the whole batch, kept where it was picked: no host sync)."""

    name = "SomeOf"

    def __init__(self, p, ops: list[BatchOp], k: int):
        super().__init__(p)
        self.ops, self.k = ops, int(k)

    def _sample(self, n, gen, device):
        picks = torch.randint(0, len(self.ops), (n, self.k), generator=gen, device=device).sort(dim=1).values
        params = {"picks": picks}
        for j in range(self.k):
            for i, op in enumerate(self.ops):
                params.update({f"{j}.{i}.{key}": v for key, v in op.sample(n, gen, device).items()})
        return params

    def _transform(self, x, params):
        for j in range(self.k):
            for i, op in enumerate(self.ops):
                prefix = f"{j}.{i}."
                own = {key[len(prefix) :]: v for key, v in params.items() if key.startswith(prefix)}
                own["apply"] = own["apply"] & (params["picks"][:, j] == i)
                x = op.apply(x, own)
        return x
