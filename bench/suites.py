"""Importing this module registers every benchmark; later issues add theirs here."""

from bench import e2e_default, gpu, ingest, large, llm, serve, sft, train  # noqa: F401
