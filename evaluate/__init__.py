"""Evaluate a model on the test split, decide whether it may be promoted, register it."""
