"""CPU threads under load: keep torch's OpenMP threads from spinning on a busy machine.

torch's CPU kernels run on an OpenMP team (libgomp).  Between parallel regions, libgomp's idle
threads spin (busy-wait) for a while before sleeping.  On a quiet machine that saves a wake-up;
on one where other processes take the cores, the spinning threads burn the time slices the
working thread needs, and every parallel region waits for a descheduled thread: the quickstart
took 16x longer under a load of 8-11 on 2 cores instead of the ~5x that sharing the cores
explains.  ``OMP_WAIT_POLICY=PASSIVE`` makes idle threads sleep at once.  Measured on the 2-core
development machine (docs/benchmarks.md, "Under load"): as fast or faster on a quiet machine, and
several times faster under load than the default.

It must be set before torch (libgomp) is loaded, so the CLI calls :func:`configure_cpu_threads`
first thing.  An explicit setting (OMP_WAIT_POLICY, GOMP_SPINCOUNT) is left alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping


def configure_cpu_threads(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy; True when it took effect
    (torch not imported yet).  Child processes (``--num-processes``) inherit it."""
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return False
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return "torch" not in sys.modules
