"""Ingest: read shards with Ray Data, clean, quarantine, split, tokenize, write Parquet + manifest."""
