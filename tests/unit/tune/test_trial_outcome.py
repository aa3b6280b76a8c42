"""A sweep's console line for a trial's end says which stop it was: its epochs ran out, its own
early stopping ended it, or the scheduler (ASHA) did."""

from raylane.tune.sweep import trial_outcome


def test_each_kind_of_end_is_named_as_what_it_was():
    metric = "val_macro_f1"
    finished = trial_outcome({"epoch": 3, metric: 0.5, "early_stopped": 0.0}, 3, metric, 2)
    own = trial_outcome({"epoch": 2, metric: 0.4, "early_stopped": 1.0}, 5, metric, 1)
    scheduler = trial_outcome({"epoch": 1, metric: 0.3, "early_stopped": 0.0}, 5, metric, 1)
    assert finished == "finished, val_macro_f1 0.5000"
    assert own == "stopped early after 2 epoch(s): no better val_macro_f1 for 1 epoch(s), val_macro_f1 0.4000"
    assert scheduler == "stopped early by the scheduler after 1 epoch(s), val_macro_f1 0.3000"
    assert trial_outcome({}, 3, metric, 0) == "stopped early by the scheduler after 0 epoch(s)"
