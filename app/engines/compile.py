"""Whether ``torch.compile`` can run here, for the bundles' ``compile`` key (MONAI ``SupervisedTrainer``)."""

from __future__ import annotations

import functools
import logging
import os

import torch

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def compile_supported(device: str | torch.device = "cpu") -> bool:
    """True where ``torch.compile`` (TorchInductor) builds and runs a tiny function on ``device``.

    TorchInductor needs a C++ compiler on CPU and Triton on CUDA; a machine without them would
    otherwise fail at the first training step. Compiling the training step makes it 1.3x faster
    on 2 CPU cores after a one-off compile of about a minute (``benchmarks/train.py``). The probe
    takes about 6 s once per process; ``$VOLSEG_COMPILE=0`` skips it and answers False.

    Returns:
        False, with a warning naming the reason, where the probe fails.
    """
    if os.environ.get("VOLSEG_COMPILE", "1") == "0":
        return False
    try:
        probe = torch.compile(lambda x: torch.relu(x) * 2.0, dynamic=False)
        ok = bool(torch.equal(probe(torch.ones(8, device=device)), torch.full((8,), 2.0, device=device)))
    except Exception as err:  # a missing compiler surfaces as one of several exception types
        logger.warning("torch.compile is not available on %s (%s: %s); training runs eagerly", device, type(err).__name__, str(err).splitlines()[0] if str(err) else "")
        return False
    return ok
