"""Connecting to Ray: the cluster in $RAY_ADDRESS (as under `ray job submit`), else a local one."""

from __future__ import annotations

import logging
import os
import sys

from raylane.console import hide_ray_noise, quiet_libraries, verbose


def init_ray() -> None:
    import ray

    if ray.is_initialized():
        return
    # By default the console holds raylane's lines, progress and real warnings; Ray's INFO lines
    # (and Ray Data's per-operator ones) only with --verbose.
    loud = verbose()
    quiet_libraries()
    if not loud:
        hide_ray_noise()
    for library in ("ray.data", "ray.serve"):
        logging.getLogger(library).setLevel(logging.INFO if loud else logging.WARNING)
    if not os.environ.get("RAY_ADDRESS"):
        # A local Ray's workers inherit this environment. Arrow's default allocator (mimalloc)
        # keeps freed memory for reuse, so a long-lived worker holds the peak of every task it
        # ran: ingesting 8x SST-2, 610 MiB per worker against 400 MiB with the C library's
        # malloc. Clusters set it in cluster.yaml (a job runtime_env would cost seconds per job).
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    ray.init(
        address=os.environ.get("RAY_ADDRESS"),
        log_to_driver=True,
        configure_logging=True,
        logging_level="INFO" if loud else "WARNING",
    )
    from ray.data import DataContext

    ctx = DataContext.get_current()
    # Bars on a terminal, where they redraw in place; in a job's log they would be pages of blocks.
    ctx.enable_progress_bars = loud or sys.stdout.isatty()
    ctx.print_on_execution_start = False


def on_this_node() -> dict:
    """Ray Data arguments that keep an actor pool on the driver's node: for work that reads a
    model directory only the driver has (exported or downloaded there). Without it, a Ray Data
    actor placed on another node of a cluster would not find the files. A label selector on the
    label Ray gives every node (a scheduling strategy would go through `ray_remote_args`, which
    Ray Data deprecates, with a warning on every call).

    No restarts: an actor pinned here can only come back here, and if this node goes the driver
    goes with it. Ray Data's default (restart forever) buys only Ray's core-worker error line
    "has constructor arguments in the object store and max_restarts > 0" on every pool
    (ray-project/ray#57733), printed by the driver's C++ side where no filter reaches it. A
    scoring actor that dies fails its stage, which is rerun on its own (`raylane evaluate`)."""
    import ray

    return {"label_selector": {"ray.io/node-id": ray.get_runtime_context().get_node_id()}, "max_restarts": 0}


def stray_placement_groups(table: dict, job_id: str) -> list[str]:
    """Ids of the placement groups in `table` (ray.util.placement_group_table()) that this job
    created and that still hold resources. A placement group id ends with its job's id."""
    return [pg_id for pg_id, info in table.items() if pg_id.endswith(job_id) and info["state"] != "REMOVED"]


def release_stray_placement_groups(grace_s: float = 10.0) -> int:
    """Remove placement groups this job's finished training left behind; returns how many.

    Call only from the driver once no training runs. A sweep's trials each create a Ray Train
    worker group with a placement group; a trial stopped early by ASHA can leave it behind
    (seen with Ray 2.60), holding its CPUs for good, and on a small machine the next stage then
    waits forever for a CPU. Anything still there after `grace_s` (normal teardown takes about a
    second) is removed."""
    import time

    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    job_id = ray.get_runtime_context().get_job_id()
    deadline = time.time() + grace_s
    while (stray := stray_placement_groups(ray.util.placement_group_table(), job_id)) and time.time() < deadline:
        time.sleep(0.5)
    for pg_id in stray:
        remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pg_id))))
    if stray:
        logging.getLogger("raylane").warning(
            "removed %d placement group(s) left behind by training: %s", len(stray), ", ".join(stray)
        )
    return len(stray)
