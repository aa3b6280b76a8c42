"""One OpenMP thread team per process at a time, for models that load in one thread and run in another.

PyTorch's CPU kernels run in OpenMP parallel regions, and OpenMP (GNU libgomp, which the torch
wheels bundle) keeps a team of worker threads for each thread that has run one. Once two teams
exist, the workers outnumber the cores a replica is given, libgomp stops spinning between regions
and parks its workers instead, and every small kernel pays a wake-up: on 2 cores, a SmolLM2-135M
decoding step ran in 63 ms in the second thread against 36 ms alone, and a burst of 32 requests
through the continuous batcher generated 1.40x the tokens/s once released (`bench llm_thread_handoff`).
A serving replica loads its model and answers the canary in one thread, then decodes in another
(the continuous batcher's, or a hot swap's follower loads beside the serving thread), so the
thread that is done hands its team back with `release_thread_pool`.
"""

from __future__ import annotations

import ctypes
import functools

OMP_PAUSE_SOFT = 1  # OpenMP 5.0 omp_pause_resource_t: free the threads, keep the settings


@functools.lru_cache(maxsize=1)
def _runtime():
    """The OpenMP runtime this process has loaded (torch's own copy), or None (not Linux, or none)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libgomp" in line or "libomp" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            runtime = ctypes.CDLL(path)  # already loaded: the same copy torch calls
        except OSError:
            continue
        if hasattr(runtime, "omp_pause_resource_all"):
            return runtime
    return None


def release_thread_pool() -> bool:
    """Ends the calling thread's OpenMP worker threads (it gets a new team if it computes again).
    True when they were released; False where the runtime offers no way (then nothing changes)."""
    runtime = _runtime()
    return runtime is not None and runtime.omp_pause_resource_all(OMP_PAUSE_SOFT) == 0
