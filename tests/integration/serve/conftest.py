"""Two replicas of a tiny model deployed on the session's Ray, for the resilience tests.

Deployed once for this package (about 17 s): the replica-kill test ends only once both replicas
run again, and the sustained-load test after it loads the same two."""

import pytest
from ray import serve

from raylane.http import free_port
from raylane.serve.deploy import deploy


@pytest.fixture(scope="package")
def two_replicas(ray_session, smoke_cfg_factory, tmp_path_factory, tiny_model):
    from raylane.models import load_classifier, load_tokenizer

    model = tmp_path_factory.mktemp("model")
    load_classifier(str(tiny_model), ["alpha", "beta", "gamma"]).save_pretrained(model)
    load_tokenizer(str(tiny_model)).save_pretrained(model)
    cfg = smoke_cfg_factory(f"serve.port={free_port()}", "serve.num_replicas=2", "serve.replica_cpus=0.5")
    url = deploy(cfg, str(model))
    yield url
    serve.shutdown()
