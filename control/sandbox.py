"""Run a memory-hungry check (loading a dataset, building a model) in a child process with a memory limit.

A dataset crafted or mistaken to be huge must fail its own check, not take down the dashboard or the
host: the child gets RLIMIT_DATA (its heap and anonymous mappings: what numpy arrays and tensors
allocate; unlike RLIMIT_AS it does not count the gigabytes of address space torch's libraries
reserve) and its MemoryError becomes a message. Arguments and results travel as JSON.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys

from control.command import PROJECT_ROOT

MEMORY_ENV = "LAB_VALIDATE_MEMORY_GB"
_REPLY = "@@sandbox-reply@@ "


class SandboxError(RuntimeError):
    """The child ran out of its memory limit or died: the message says which and what to do."""


def memory_limit_bytes() -> int:
    """LAB_VALIDATE_MEMORY_GB, else half of this machine's physical memory."""
    if os.environ.get(MEMORY_ENV):
        return int(float(os.environ[MEMORY_ENV]) * 2**30)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def call_limited(target: str, *args, errors: tuple[type[Exception], ...] = ()):
    """`module:function`(*args) in a fresh child under the memory limit; its return value.

    An exception of a type in `errors` raised in the child is raised again here with its message."""
    limit = memory_limit_bytes()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(
        [sys.executable, "-c", "from control.sandbox import child_main; child_main()"],
        input=json.dumps({"target": target, "args": args, "limit": limit}),
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
    )
    reply = _reply(proc.stdout)
    if reply is None:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise SandboxError(f"the check process died ({tail[0][:300]})")
    if "memory" in reply:
        raise SandboxError(
            f"loading this needs more than {limit / 2**30:.1f} GB of memory (the limit for checks, {MEMORY_ENV}): "
            "use a smaller image_size or fewer images"
        )
    if "error" in reply:
        for cls in errors:
            if cls.__name__ == reply["error"]:
                raise cls(reply["message"])
        raise SandboxError(f"{reply['error']}: {reply['message']}")
    return reply["result"]


def _reply(stdout: str) -> dict | None:
    for line in reversed(stdout.split("\n")):
        if line.startswith(_REPLY):
            return json.loads(line.removeprefix(_REPLY))
    return None


def child_main() -> None:
    request = json.loads(sys.stdin.read())
    resource.setrlimit(resource.RLIMIT_DATA, (request["limit"], request["limit"]))
    out, sys.stdout = sys.stdout, sys.stderr  # whatever the check prints must not garble the reply
    try:
        module, name = request["target"].split(":")
        reply = {"result": getattr(importlib.import_module(module), name)(*request["args"])}
    except MemoryError:
        reply = {"memory": True}
    except Exception as exc:  # cv2 and torch say "Insufficient memory" / "can't allocate memory" in their own types
        text = str(exc)
        out_of_memory = "allocate" in text.lower() or "insufficient memory" in text.lower()
        reply = {"memory": True} if out_of_memory else {"error": type(exc).__name__, "message": text}
    reply["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.write(_REPLY + json.dumps(reply) + "\n")
    out.flush()
