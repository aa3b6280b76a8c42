"""Two replicas under a minute of sustained load answer every request (tier: slow, from the name)."""

from raylane.serve.loadtest import run_load


def test_sixty_seconds_of_sustained_load_without_an_error(two_replicas, capsys):
    report = run_load(two_replicas, concurrency=8, seconds=60)
    with capsys.disabled():
        print(f"\nsustained load, 60 s at concurrency 8 on 2 replicas: {report.summary()}")
    assert report.requests > 600, report.summary()  # it really was under load
    assert report.statuses == {200: report.ok}, report.statuses
    assert report.percentile_ms(99) < 5000
