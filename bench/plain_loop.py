"""The users' plain PyTorch training script, the reference of bench/bench_whole_run.py.

    python bench/plain_loop.py --data prepared.npz --model small_cnn --epochs 4 --seed 0 --out DIR

What a notebook does: arrays from an .npz, a list of PIL images, per-image torchvision transforms
(RandomHorizontalFlip, RandomCrop with padding, ToTensor, Normalize with the training set's mean/std) in
a DataLoader with worker processes, AdamW, cosine LR stepped per epoch, `loss.item()` every step, a
validation pass per epoch, the test set at the end, `torch.save` of the final weights. The model classes
are the engine's own (read from engine/models/custom.py as a plain file, no package), so both sides train
the same architecture from the same initial weights. Prints one line per event, with time.time(), for the
bench to time: `@first_loss T`, `@epoch E val_acc A T`, `@test_acc A T`.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def models_module():
    spec = importlib.util.spec_from_file_location("custom_models", ROOT / "engine" / "models" / "custom.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_model(name: str, channels: int, classes: int) -> torch.nn.Module:
    m = models_module()
    if name == "small_cnn":
        return m.SmallCNN(channels, classes, width=16)
    if name == "resnet":
        return m.CifarResNet(channels, classes, [16, 32, 64], [1, 1, 1], False, 0.0, 0.0, 0.0)
    raise SystemExit(f"unknown model {name}")


class PILImages(torch.utils.data.Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray, transform):
        self.images = [Image.fromarray(im[..., 0], "L") for im in x]
        self.labels = [int(v) for v in y]
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def accuracy(model, loader) -> float:
    model.eval()
    correct = seen = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += (model(images).argmax(1) == labels).sum().item()
            seen += len(labels)
    return correct / seen


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)  # torch's AdamW default, what notebooks get
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()

    with np.load(a.data) as z:
        tx, ty, vx, vy, sx, sy = (z[k] for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"))
    mean, std = float(tx.mean() / 255), float(tx.std() / 255)
    size, pad = tx.shape[1], max(1, tx.shape[1] // 8)
    augment = [] if a.no_augment else [T.RandomHorizontalFlip(), T.RandomCrop(size, padding=pad)]
    tf = T.Compose([*augment, T.ToTensor(), T.Normalize([mean], [std])])
    tf_eval = T.Compose([T.ToTensor(), T.Normalize([mean], [std])])
    loader = torch.utils.data.DataLoader(
        PILImages(tx, ty, tf), batch_size=a.batch_size, shuffle=True, num_workers=a.workers, drop_last=True
    )
    val_loader = torch.utils.data.DataLoader(PILImages(vx, vy, tf_eval), batch_size=512)
    test_loader = torch.utils.data.DataLoader(PILImages(sx, sy, tf_eval), batch_size=512)

    torch.manual_seed(a.seed)
    model = make_model(a.model, tx.shape[-1], int(max(ty.max(), vy.max(), sy.max())) + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.epochs)
    loss_fn = torch.nn.CrossEntropyLoss()
    first = True
    for epoch in range(1, a.epochs + 1):
        model.train()
        running = 0.0
        for images, labels in loader:
            opt.zero_grad()
            loss = loss_fn(model(images), labels)
            if first:
                print(f"@first_loss {time.time():.4f}", flush=True)
                first = False
            loss.backward()
            opt.step()
            running += loss.item()
        sched.step()
        print(f"@epoch {epoch} val_acc {accuracy(model, val_loader):.4f} {time.time():.4f}", flush=True)
    print(f"@test_acc {accuracy(model, test_loader):.4f} {time.time():.4f}", flush=True)
    torch.save(model.state_dict(), Path(a.out) / "model.pt")


if __name__ == "__main__":
    main()
