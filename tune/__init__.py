"""Tune: hyperparameter sweeps whose trials run the training driver itself."""
