"""Two-process tests of what torch.distributed reduces (real gloo, no Ray): a worker's process group,
and the parent's bounded wait for its workers.

Everything here is bounded in time, because a test that hangs costs the whole CI run: the group
meets through a file (no port to race for), its collectives time out, a worker that is stuck
prints where before it exits, and the parent kills what is left when the deadline passes.
"""

import contextlib
import datetime
import faulthandler
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

DEADLINE_S = 180.0


@contextlib.contextmanager
def gloo_group(rank: int, rendezvous: str, world_size: int = 2):
    """This process as worker `rank` of a gloo group that meets at file `rendezvous`, one thread each."""
    if sys.platform == "linux":  # both workers are on this machine: talk over loopback, not the hostname's interface
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    faulthandler.dump_traceback_later(DEADLINE_S - 20, exit=True)  # a stuck worker says where
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{rendezvous}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=DEADLINE_S / 2),
    )
    try:
        yield
    finally:
        dist.destroy_process_group()
        faulthandler.cancel_dump_traceback_later()


def run_workers(worker, args: tuple, directory: Path, nprocs: int = 2) -> None:
    """worker(rank, rendezvous, *args) in `nprocs` spawned processes; raises what one raised, or
    TimeoutError after DEADLINE_S with every worker killed."""
    rendezvous = str(directory / "rendezvous")
    context = mp.start_processes(worker, args=(rendezvous, *args), nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not context.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{nprocs} gloo workers did not finish in {DEADLINE_S:.0f} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join()
