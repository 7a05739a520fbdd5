"""What a run records about where it ran (``environment.json``): the code's git revision, package
versions, Python, platform, host, device, torch threads and GPUs, and when it started.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Any

from fairbench.runs.store import now

#: the code revision to record instead of asking git: for a copy of the code outside a git checkout
#: (a wheel, a container image: the commit it was built from), and for tests
REVISION_ENV = "FAIRBENCH_GIT_REVISION"


def git_revision() -> str | None:
    """The commit of this code, ``+dirty`` when its working tree has uncommitted changes; None
    outside git."""
    if os.environ.get(REVISION_ENV):
        return os.environ[REVISION_ENV]
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment(device: str) -> dict[str, Any]:
    import platform
    from importlib import metadata

    import torch

    versions = {}
    for dist in ("fairbench", "torch", "torchvision", "timm", "numpy", "pandas", "pydantic"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    env = {
        "git_revision": git_revision(),
        "packages": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": device,
        # float reductions depend on the thread count: the same seed on 1 and 2 threads can end
        # in different models, so it is part of what reproduces a run
        "torch_threads": torch.get_num_threads(),
        # the GPUs this process was given (a launcher pins each worker to one)
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "started": now(),
    }
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env
