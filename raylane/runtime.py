"""Connecting to Ray: the cluster in $RAY_ADDRESS (as under `ray job submit`), else a local one."""

from __future__ import annotations

import logging
import os


def init_ray() -> None:
    import ray

    if ray.is_initialized():
        return
    # Keep Ray Data's progress bars but drop its per-operator log spam from the driver's output.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True, configure_logging=True, logging_level="WARNING")
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = True
    ctx.print_on_execution_start = False


def on_this_node() -> dict:
    """Ray remote args that keep tasks or actors on the driver's node: for work that reads a
    model directory only the driver has (exported or downloaded there). Without it, a Ray Data
    actor placed on another node of a cluster would not find the files."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)}
