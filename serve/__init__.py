"""Serve: the registered model behind an HTTP API on Ray Serve, and batch prediction."""
