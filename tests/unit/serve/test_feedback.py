"""Feedback that cannot be replayed: prediction ids bound to their text and an expiry, used once
(also after a restart), and a quota counted from what the sink holds. No Ray: the sink and the
ids are plain objects over a directory, as a replica holds them."""

import threading
import time

import pytest

from raylane.serve.feedback import AlreadyUsed, FeedbackSink, PredictionIds, QuotaExceeded, UsedIds

SECRET = b"a-signing-secret"


def _sink(directory, **kwargs) -> FeedbackSink:
    return FeedbackSink(str(directory), flush_s=60, **kwargs)  # flushed by the test, not the clock


def test_an_id_holds_only_for_its_own_text_and_until_it_expires():
    ids = PredictionIds(SECRET, ttl_s=3600)
    issued = ids.issue("text A", now=1_000_000)
    nonce, expiry, signature = issued.split(".")
    assert int(expiry) == 1_000_000 + 3600 and len(nonce) == 24 and len(signature) == 32
    assert ids.valid(issued, "text A", now=1_000_000 + 3599)
    assert "for this text" in ids.problem(issued, "text B", now=1_000_000)
    assert not ids.valid(issued, "text A ", now=1_000_000)  # the text as scored, to the character
    assert "expired" in ids.problem(issued, "text A", now=1_000_000 + 3600)
    longer = f"{nonce}.{int(expiry) + 10**6}.{signature}"  # the expiry is signed: moving it breaks the id
    assert not ids.valid(longer, "text A", now=1_000_000)
    assert not PredictionIds(b"another secret").valid(issued, "text A", now=1_000_000)
    assert not PredictionIds(None).valid(issued, "text A", now=1_000_000)
    old_format = f"{nonce}.{signature}"  # `<nonce>.<signature>`, as issued before ids had a text
    assert not ids.valid(old_format, "text A", now=1_000_000)
    image = b"\x89PNG not really"
    assert ids.valid(ids.issue(image), image) and not ids.valid(ids.issue(image), "text A")


def test_a_used_id_is_refused_by_the_same_sink_and_by_one_started_again(tmp_path):
    ids = PredictionIds(SECRET)
    issued, other = ids.issue("a text"), ids.issue("another text")
    first = _sink(tmp_path, replica="a")
    first.add({"text": "a text", "label": "x"}, issued)
    with pytest.raises(AlreadyUsed):
        first.add({"text": "a text", "label": "y"}, issued)
    first.close()

    restarted = _sink(tmp_path, replica="b")  # a new replica over the same sink: the restart
    with pytest.raises(AlreadyUsed):
        restarted.add({"text": "a text", "label": "z"}, issued)
    restarted.add({"text": "another text", "label": "x"}, other)  # an unused id still goes in
    assert restarted.flush() == 1
    restarted.close()
    kept = [line for f in tmp_path.rglob("feedback-*.jsonl") for line in f.read_text().splitlines()]
    assert len(kept) == 2  # the replays never reached the sink


def test_an_id_is_used_once_by_replicas_claiming_it_at_the_same_moment(tmp_path):
    nonce, expiry = "a" * 24, int(time.time()) + 3600
    replicas = [UsedIds(str(tmp_path)) for _ in range(8)]
    barrier, won = threading.Barrier(len(replicas)), []

    def claim(used: UsedIds) -> None:
        barrier.wait()
        won.append(used.claim(nonce, expiry))

    threads = [threading.Thread(target=claim, args=(used,)) for used in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False] * 7 + [True]


def test_used_ids_are_forgotten_once_expired_and_hidden_from_ingest(tmp_path):
    from raylane.sources import list_files

    now = time.time()
    used = UsedIds(str(tmp_path))
    assert used.claim("a" * 24, int(now - 2 * 86400)) and used.claim("b" * 24, int(now + 86400))
    assert used.forget_expired(now) == 1
    markers = sorted(p.name for p in (tmp_path / "_used").rglob("_*"))
    assert markers == ["_" + "b" * 24]  # the live id stays used
    assert not UsedIds(str(tmp_path)).claim("b" * 24, int(now + 86400))

    sink = _sink(tmp_path)
    sink.add({"text": "t", "label": "x"})
    sink.close()
    read_back = [f.path for f in list_files(str(tmp_path))]  # what retraining ingests from the sink
    assert len(read_back) == 1 and "/feedback-" in read_back[0]


def test_the_quota_counts_what_the_sink_already_holds(tmp_path):
    ids = PredictionIds(SECRET)
    first = _sink(tmp_path, max_bytes=300)
    first.add({"text": "x" * 100})
    first.add({"text": "y" * 100})
    first.close()  # 2 records of 113 bytes each on disk

    restarted = _sink(tmp_path, max_bytes=300)
    assert restarted.bytes_used >= 224
    issued = ids.issue("z")
    with pytest.raises(QuotaExceeded):
        restarted.add({"text": "z" * 100}, issued)
    restarted.close()
    roomier = _sink(tmp_path, max_bytes=1000)
    roomier.add({"text": "z" * 100}, issued)  # refused for the quota, the id was not used up
    assert roomier.flush() == 1 and roomier.bytes_used >= 3 * 113
    roomier.close()
