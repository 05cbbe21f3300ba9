"""From uint8 arrays to normalised float tensors: the one place pixels become floats."""

from __future__ import annotations

import numpy as np

_STATS_ON_DEVICE: dict[tuple, object] = {}


def _stats_tensor(values, device):
    """Per-channel stats as a (1, C, 1, 1) float tensor, made once per device: torch.as_tensor(list,
    device=cuda) is a synchronous host-to-device copy that would stall every training step."""
    import torch

    key = (tuple(float(v) for v in values), str(device))
    if key not in _STATS_ON_DEVICE:
        _STATS_ON_DEVICE[key] = torch.as_tensor(key[0], device=device, dtype=torch.float32).view(1, -1, 1, 1)
    return _STATS_ON_DEVICE[key]


def normalize_batch(x_uint8, mean, std, channels_last: bool = False):
    """uint8 NHWC (CPU or GPU tensor) -> float NCHW normalised. The one place pixels become floats."""
    import torch

    x = x_uint8.permute(0, 3, 1, 2).float().div_(255.0)
    m = _stats_tensor(mean, x.device)
    s = _stats_tensor(std, x.device)
    x = (x - m) / s
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


class AugmentedArrays:
    """torch Dataset over uint8 arrays; applies an albumentations pipeline per image (CPU path)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, pipeline=None):
        self.x, self.y, self.pipeline = x, y, pipeline

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        import torch

        from engine.augment import apply_pipeline

        img = self.x[i]
        if self.pipeline is not None:
            img = apply_pipeline(self.pipeline, img)
        return torch.from_numpy(np.ascontiguousarray(img)), int(self.y[i])
