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
