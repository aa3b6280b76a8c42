"""Two-process tests of what torch.distributed reduces (real gloo, no Ray): a worker's process group."""

import contextlib
import os

import torch
import torch.distributed as dist


@contextlib.contextmanager
def gloo_group(rank: int, port: int, world_size: int = 2):
    """This process as worker `rank` of a gloo group on loopback `port`, one thread each."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()
