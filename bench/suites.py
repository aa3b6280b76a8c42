"""Importing this module registers every benchmark; later issues add theirs here."""

from bench import distill, e2e_default, gpu, ingest, large, llm, loop, serve, sft, train  # noqa: F401
