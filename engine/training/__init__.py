"""Training and evaluation: the loop (loop), evaluation and TTA (evaluate), losses, optimizers and
schedules (optim), checkpoints, DDP helpers (distributed) and the GPU-resident batch feeder (fastpath)."""
