"""Where the replicas of the deployed app stand: Serve's count and their processes."""

from ray import serve

from raylane.serve.deploy import APP_NAME
from raylane.serve.scoring import DEPLOYMENT


def running_replicas() -> int:
    states = serve.status().applications[APP_NAME].deployments[DEPLOYMENT].replica_states
    return states.get("RUNNING", 0)


def replica_pids() -> list[int]:
    import ray
    from ray.util.state import list_actors

    # This session's Ray by address: another local Ray on the machine would make it ambiguous.
    actors = list_actors(
        address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")], detail=True, limit=1000
    )
    return [a.pid for a in actors if a.class_name == f"ServeReplica:{APP_NAME}:{DEPLOYMENT}"]
