"""The GGUF model cache, safe to share: one conversion per file however many processes ask at
once, entries keyed by content and trusted only when complete, a cache directory only its owner
can write. Most tests pass a cheap stand-in for the conversion (it writes a config and leaves a
line in a log, so conversions can be counted); one converts a real, tiny GGUF."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raylane.config import ConfigError
from raylane.models import COMPLETE, gguf_directory


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("RAYLANE_MODEL_CACHE", str(cache))
    return cache


@pytest.fixture
def gguf(tmp_path) -> Path:
    """Bytes that stand for a GGUF file: the stand-in conversion never parses them."""
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + os.urandom(4096))
    return path


class Conversions:
    """A stand-in conversion that counts its calls and can be told to fail."""

    def __init__(self, fail: bool = False):
        self.calls, self.fail = 0, fail

    def __call__(self, gguf: Path, target: Path) -> None:
        self.calls += 1
        (target / "config.json").write_text(json.dumps({"converted_from": str(gguf)}))
        if self.fail:
            raise RuntimeError("conversion failed half way")


# Run in two processes at once: each says it is about to ask, then asks for the same entry. The
# conversion waits until both have said so, then takes a while, so the second asks while the first
# converts. The log shows who converted and when.
RACER = """
import json, os, sys, time
from pathlib import Path
from raylane.models import gguf_directory

log = Path(sys.argv[2])

def note(**event):
    with log.open("a") as f:
        f.write(json.dumps({**event, "pid": os.getpid(), "at": time.time()}) + "\\n")

def convert(gguf, target):
    note(event="convert")
    deadline = time.time() + 30
    while sum(1 for line in log.read_text().splitlines() if '"asking"' in line) < 2 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the other process is now waiting for the lock
    (target / "config.json").write_text("{}")
    note(event="converted")

note(event="asking")
target = gguf_directory(sys.argv[1], convert=convert)
note(event="got", target=str(target))
"""


def test_two_processes_converting_the_same_gguf_at_once_convert_once(cache, gguf, tmp_path):
    log = tmp_path / "log.jsonl"
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(gguf), str(log)]) for _ in range(2)]
    assert [racer.wait(timeout=60) for racer in racers] == [0, 0]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    conversions = [e for e in events if e["event"] == "convert"]
    (converted,) = [e for e in events if e["event"] == "converted"]
    got = [e for e in events if e["event"] == "got"]
    assert len(conversions) == 1 and len(got) == 2
    asking = [e for e in events if e["event"] == "asking"]
    assert len(asking) == 2 and all(e["at"] < converted["at"] for e in asking)  # both asked while it ran
    (target,) = {e["target"] for e in got}
    assert (Path(target) / "config.json").is_file() and (Path(target) / COMPLETE).is_file()


def test_an_entry_is_keyed_by_content_so_a_touch_does_not_convert_again(cache, gguf):
    convert = Conversions()
    first = gguf_directory(str(gguf), convert=convert)
    os.utime(gguf, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime, the same bytes
    assert gguf_directory(str(gguf), convert=convert) == first and convert.calls == 1
    assert hashlib.sha256(gguf.read_bytes()).hexdigest()[:32] in first.name
    gguf.write_bytes(gguf.read_bytes() + b"more")  # other bytes: another entry
    assert gguf_directory(str(gguf), convert=convert) != first and convert.calls == 2


def test_a_planted_or_incomplete_entry_is_not_trusted_but_rebuilt_once(cache, gguf):
    stat = gguf.stat()
    # The name the cache used to trust: predictable from the path, size and mtime alone.
    old_key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    planted = cache / f"{gguf.stem}-{old_key}"
    planted.mkdir(parents=True)
    (planted / "config.json").write_text('{"planted": true}')
    convert = Conversions()
    entry = gguf_directory(str(gguf), convert=convert)
    assert entry != planted and convert.calls == 1

    (entry / COMPLETE).unlink()  # a crash after the rename, or a directory someone made
    (entry / "config.json").write_text('{"written_by": "someone else"}')
    assert gguf_directory(str(gguf), convert=convert) == entry and convert.calls == 2
    assert "someone else" not in (entry / "config.json").read_text()
    assert gguf_directory(str(gguf), convert=convert) == entry and convert.calls == 2  # rebuilt once

    (entry / COMPLETE).write_text("0" * 64)  # a marker for other bytes
    gguf_directory(str(gguf), convert=convert)
    assert convert.calls == 3


def test_a_failed_conversion_leaves_no_staging_and_the_next_load_converts(cache, gguf):
    with pytest.raises(RuntimeError, match="half way"):
        gguf_directory(str(gguf), convert=Conversions(fail=True))
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == ["hashes"]  # no staging, no entry
    key = hashlib.sha256(gguf.read_bytes()).hexdigest()[:32]
    killed = cache / f".{gguf.stem}-{key}-abc123"  # the staging of a process killed mid-way
    killed.mkdir()
    entry = gguf_directory(str(gguf), convert=Conversions())
    assert (entry / COMPLETE).is_file() and not killed.exists()


def test_the_cache_is_private_and_one_others_can_write_is_refused(cache, gguf, monkeypatch):
    entry = gguf_directory(str(gguf), convert=Conversions())
    assert (cache.stat().st_mode & 0o777) == 0o700 and (entry.stat().st_mode & 0o777) == 0o700
    for mode in (0o777, 0o770):
        cache.chmod(mode)
        with pytest.raises(ConfigError) as err:
            gguf_directory(str(gguf), convert=Conversions())
        assert str(cache) in str(err.value) and "$RAYLANE_MODEL_CACHE" in str(err.value)
    cache.chmod(0o755)  # readable by others, as older raylane made it: still ours alone to write
    assert gguf_directory(str(gguf), convert=Conversions()) == entry

    owner = cache.stat().st_uid
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)  # the same directory, seen by another user
    with pytest.raises(ConfigError, match="owned by user id"):
        gguf_directory(str(gguf), convert=Conversions())


def _byte_level_alphabet() -> list[str]:
    """GPT-2's byte-to-character map: a byte-level BPE vocabulary's first 256 tokens."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def _write_tiny_gguf(path: Path) -> Path:
    """A 1-layer Llama (hidden 16) in fp32 with a 261-token byte-level BPE: a real GGUF that
    `transformers` converts in well under a second once imported."""
    import gguf
    import numpy as np

    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *_byte_level_alphabet(), "he", "ll"]
    vocab, hidden, ffn, heads, kv_heads = len(tokens), 16, 32, 2, 1
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (vocab - 3))  # 3: control tokens
    writer.add_token_merges(["h e", "l l"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    rng = np.random.default_rng(0)
    kv = kv_heads * hidden // heads
    shapes = {
        "token_embd.weight": (vocab, hidden),
        "blk.0.attn_q.weight": (hidden, hidden),
        "blk.0.attn_k.weight": (kv, hidden),
        "blk.0.attn_v.weight": (kv, hidden),
        "blk.0.attn_output.weight": (hidden, hidden),
        "blk.0.ffn_gate.weight": (ffn, hidden),
        "blk.0.ffn_up.weight": (ffn, hidden),
        "blk.0.ffn_down.weight": (hidden, ffn),
        "output.weight": (vocab, hidden),
    }
    for name, shape in shapes.items():
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))
    for name in ("blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"):
        writer.add_tensor(name, np.ones(hidden, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_real_gguf_is_dequantised_once_into_a_model_that_loads(cache, tmp_path):
    from transformers import AutoModelForCausalLM

    from raylane.models import load_tokenizer

    path = _write_tiny_gguf(tmp_path / "tiny-llama.gguf")
    entry = gguf_directory(str(path))
    assert (entry / COMPLETE).read_text() == hashlib.sha256(path.read_bytes()).hexdigest()
    model = AutoModelForCausalLM.from_pretrained(entry)
    assert model.config.vocab_size == 261 and model.config.num_hidden_layers == 1
    assert load_tokenizer(str(path))("hello")["input_ids"][:2] == [259, 260]  # "he", "ll": the merges
    marker_written = (entry / COMPLETE).stat().st_mtime_ns
    assert gguf_directory(str(path)) == entry and (entry / COMPLETE).stat().st_mtime_ns == marker_written
