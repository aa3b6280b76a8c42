"""API keys: where they come from, and Bearer checks."""

import pytest

from raylane.config import ConfigError
from raylane.serve.auth import _digest, bearer_matches, key_digests, load_keys


def authorized(header, keys):
    return bearer_matches(header, tuple(_digest(k) for k in keys))


@pytest.mark.parametrize(
    "header, ok",
    [
        (None, False),
        ("", False),
        ("Bearer", False),
        ("Bearer wrong", False),
        ("Basic k1", False),
        ("Bearer k1", True),
        ("bearer k2", True),  # the scheme is case-insensitive, the key is not
        ("Bearer K1", False),
        ("Bearer k1x", False),
    ],
)
def test_bearer_keys(header, ok):
    assert authorized(header, ("k1", "k2")) is ok


def test_no_keys_means_auth_is_off():
    assert authorized(None, ())


def test_only_digests_of_the_keys_are_kept(monkeypatch):
    monkeypatch.setenv("RAYLANE_DIGEST_KEYS", "secret-key-1,secret-key-2")
    digests = key_digests("RAYLANE_DIGEST_KEYS", "")
    assert len(digests) == 2 and all(len(d) == 32 for d in digests)
    assert not any(b"secret-key" in d for d in digests)
    assert bearer_matches("Bearer secret-key-2", digests) and not bearer_matches("Bearer secret-key-3", digests)


def test_keys_from_an_environment_variable_and_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYLANE_TEST_KEYS", " a1, a2 ,")
    secret = tmp_path / "keys"
    secret.write_text("f1\n\n f2 \n")
    assert load_keys("RAYLANE_TEST_KEYS") == ("a1", "a2")
    assert load_keys("", str(secret)) == ("f1", "f2")
    assert load_keys("RAYLANE_TEST_KEYS", str(secret)) == ("a1", "a2", "f1", "f2")
    assert load_keys() == ()


def test_a_named_source_without_keys_is_an_error_naming_its_key(monkeypatch, tmp_path):
    # Serving without auth because a secret failed to mount must not happen quietly.
    monkeypatch.setenv("RAYLANE_TEST_KEYS", " , ")
    blank = tmp_path / "blank"
    blank.write_text("\n \n")
    cases = [
        (("RAYLANE_TEST_KEYS", ""), "serve.api_keys_env"),
        (("", str(blank)), "serve.api_keys_file"),
        (("", str(tmp_path / "missing")), "serve.api_keys_file"),
    ]
    for args, key in cases:
        with pytest.raises(ConfigError) as err:
            load_keys(*args)
        assert err.value.key == key
