"""Resume state is data: loading a checkpoint runs no code from it."""

import os
import pickle

import pytest
import torch

from raylane.train import checkpoint


class _Payload:
    """What someone with write access to the checkpoint bucket could plant."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/raylane-pwned-by-checkpoint",))


def test_a_pickled_payload_in_a_checkpoint_is_refused_without_running(tmp_path):
    marker = "/tmp/raylane-pwned-by-checkpoint"
    if os.path.exists(marker):
        os.remove(marker)
    torch.save({"epoch": 1, "rng": _Payload()}, tmp_path / checkpoint.STATE_FILE)
    with pytest.raises(pickle.UnpicklingError):
        checkpoint.load_state(tmp_path)
    assert not os.path.exists(marker)


def test_rng_state_round_trips_through_the_weights_only_loader(tmp_path):
    import random

    import numpy as np

    torch.save({"epoch": 3, "rng": checkpoint.rng_state()}, tmp_path / checkpoint.STATE_FILE)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    checkpoint.set_rng_state(checkpoint.load_state(tmp_path)["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


# --- the sharded (FSDP) resume state: torch.distributed.checkpoint, single process here ---------


class _Planted:
    """Unpickled, it creates a file: what a hostile `shards/.metadata` would do instead."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _trained(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_sharded_state_round_trips_through_the_data_only_loader(tmp_path):
    model, optimizer = _trained(0)
    checkpoint.save_shards(tmp_path, model, optimizer, lora=False)
    fresh, fresh_optimizer = _trained(1)
    checkpoint.load_shards(tmp_path, fresh, fresh_optimizer, lora=False)
    for name, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    saved, loaded = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert loaded["param_groups"] == saved["param_groups"]
    for index, state in saved["state"].items():
        for key, value in state.items():
            assert torch.equal(loaded["state"][index][key], value), (index, key)


def test_a_planted_pickle_in_the_shards_metadata_is_refused_without_running(tmp_path):
    model, optimizer = _trained(0)
    checkpoint.save_shards(tmp_path, model, optimizer, lora=False)
    created = tmp_path / "created-by-the-checkpoint"
    (tmp_path / checkpoint.SHARDS_DIR / ".metadata").write_bytes(pickle.dumps(_Planted(created)))
    fresh, fresh_optimizer = _trained(1)
    with pytest.raises(checkpoint.UntrustedCheckpoint, match=r"\.metadata refers to io\.open, .*refusing"):
        checkpoint.load_shards(tmp_path, fresh, fresh_optimizer, lora=False)
    assert not created.exists()


def test_a_planted_pickle_among_the_shards_values_is_refused_without_running(tmp_path):
    """The optimizer's param groups are stored as pickled values, which torch's own load planner
    unpickles with weights_only=False: a checkpoint saved by DCP itself can carry the payload."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model, optimizer = _trained(0)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    created = tmp_path / "created-by-the-checkpoint"
    optimizer_state["param_groups"][0]["lr"] = _Planted(created)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(tmp_path / checkpoint.SHARDS_DIR))
    assert not created.exists()
    fresh, fresh_optimizer = _trained(1)
    with pytest.raises(checkpoint.UntrustedCheckpoint, match="optimizer.param_groups.0.lr"):
        checkpoint.load_shards(tmp_path, fresh, fresh_optimizer, lora=False)
    assert not created.exists()
