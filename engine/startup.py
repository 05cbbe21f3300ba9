"""An engine process starts without the cyclic garbage collector, and trains with it.

Importing torch, torch._dynamo (the first optimizer imports it) and the engine creates some 580,000
long-lived objects. With the collector on, Python scans all of them again and again while they are being
created (a full pass over them takes ~0.3 s on a 2-core VM): about 0.7 s of a 2.4 s start to the first
batch. `pause()` turns the collector off as `python -m engine train` begins (engine/__main__.py);
`resume()`, which the training loop calls before its first epoch, moves every object alive into the
permanent generation (`gc.freeze`: never scanned again, so the full passes during training stay short too)
and turns the collector back on. What start-up leaves as cyclic garbage stays allocated: import-time
tuples, cells and functions, about 8,000 objects and no tensors after a preflight.

A process that never paused (tests, notebooks calling engine.training.loop.train) is left as it is.
The dashboard freezes its own long-lived objects after its first page run
(dashboard.state.freeze_long_lived_objects); it never pauses, so it collects once before it freezes.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """End of start-up: freeze what is alive and collect from here on. A no-op unless pause() paused."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
