"""Credentials inside URIs never reach what raylane records."""

import pytest

from raylane.redact import redact, redacted


@pytest.mark.parametrize(
    "text, hidden",
    [
        ("s3://AKIAEXAMPLE:s3cr3t/key@bucket/raw/*.csv", "s3cr3t/key"),
        ("https://alice:hunter2@mlflow.example.com:5000", "hunter2"),
        ("gs://bucket/data.parquet?token=ya29.abc&x=1", "ya29.abc"),
        ("https://acct.blob.core.windows.net/c/f.csv?sv=2020&sig=AbC%2Fd&se=2030", "AbC%2Fd"),
        ("s3://bucket/p?access_key=AKIAEXAMPLE&secret_key=wJalr&endpoint_override=http://127.0.0.1:9000", "wJalr"),
        ("https://h/p?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA%2F2026", "deadbeef"),
        ("reading s3://id:pw@bucket/x failed: timeout", "pw@"),
    ],
)
def test_credentials_are_masked(text, hidden):
    assert hidden not in redact(text) and "***" in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "data/made-with-ml/dataset.csv",
        "models:/raylane-classifier@champion",
        "http://127.0.0.1:5000",
        "s3://bucket/path/*.csv?endpoint_override=http://127.0.0.1:9000",
        "write to someone@example.com",
        "train.lr=3e-5",
    ],
)
def test_everything_else_is_left_alone(text):
    assert redact(text) == text


def test_nested_values_are_masked_where_they_sit():
    value = {"data": {"source": "s3://k:SECRET@b/x", "fields": ["a", "s3://k:SECRET@b/y"]}, "n": 3}
    assert "SECRET" not in str(redacted(value)) and redacted(value)["n"] == 3
