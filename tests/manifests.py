"""A small, valid ingest manifest for unit tests that need one without ingesting anything."""

from raylane.manifest import Counts, LengthStats, Manifest, PiiStats, TextPreparation, TokenizerRef


def make_manifest(labels: list[str], class_counts: dict[str, dict[str, int]], train_histogram: list[int]) -> Manifest:
    splits = {s: sum(c.values()) for s, c in class_counts.items()}
    total = sum(splits.values())
    lengths = LengthStats(p50=20, p95=30, max=40, mean=20.0, truncated=0, histogram=train_histogram)
    return Manifest(
        format_version=3,
        created_at="2026-01-01T00:00:00+00:00",
        source_digest="s",
        config_digest="c",
        sources=[],
        tokenizer=TokenizerRef(name_or_path="tiny", digest="t"),
        max_length=64,
        text_fields=["text"],
        label_field="label",
        preparation=TextPreparation(lowercase=False, mask_pii=[]),
        labels=labels,
        label2id={name: i for i, name in enumerate(labels)},
        counts=Counts(input=total, accepted=total, quarantined=0, quarantine_reasons={}),
        splits=splits,
        class_counts=class_counts,
        token_lengths={split: lengths for split in class_counts},
        pii=PiiStats(masked_kinds=[], counts={}),
        shards={split: 1 for split in class_counts},
        columns={},
        config={},
        elapsed_s=1.0,
    )
