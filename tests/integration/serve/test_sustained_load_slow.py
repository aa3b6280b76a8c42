"""Two replicas under half a minute of sustained load answer every request (tier: slow, from the
name). Half a minute is thousands of requests here (3,054 alone), far past every batch window the replicas see; the
minute it used to run cost the suite 30 s more."""

from raylane.serve.loadtest import run_load


def test_thirty_seconds_of_sustained_load_without_an_error(two_replicas, capsys):
    report = run_load(two_replicas, concurrency=8, seconds=30)
    with capsys.disabled():
        print(f"\nsustained load, 30 s at concurrency 8 on 2 replicas: {report.summary()}")
    assert report.requests > 600, report.summary()  # it really was under load
    assert report.statuses == {200: report.ok}, report.statuses
    assert report.percentile_ms(99) < 5000
