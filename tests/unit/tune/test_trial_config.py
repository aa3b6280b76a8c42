import pytest

from raylane.config import ConfigError, load_config
from raylane.tune.sweep import trial_config


def test_a_trial_sets_train_keys_and_lora_settings():
    cfg = load_config(
        None,
        [
            "train.peft=lora",
            "sweep.space={lr: {kind: loguniform, low: 1.0e-4, high: 1.0e-3}, lora.r: {kind: choice, values: [4, 16]}}",
        ],
    )
    trial = trial_config(cfg, {"lr": 5e-4, "lora.r": 16})
    assert trial.train.lr == 5e-4 and trial.train.lora.r == 16
    assert trial.train.lora.alpha == cfg.train.lora.alpha  # the rest of the section kept
    assert cfg.train.lora.r == 8  # the sweep's own config untouched


def test_a_sampled_value_is_type_checked_and_named():
    cfg = load_config(None, ["train.peft=lora"])
    with pytest.raises(ConfigError) as err:
        trial_config(cfg, {"lora.r": 0})
    assert err.value.key == "train.lora.r"


def test_the_space_names_only_train_keys():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["sweep.space={lora.rank: {kind: choice, values: [4]}}"])
    assert err.value.key == "sweep.space.lora.rank"
