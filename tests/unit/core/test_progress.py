"""Progress inside an epoch: throttled lines with rate and ETA, on a clock the test controls."""

from raylane.progress import RowProgress, StepProgress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_interval_with_rate_and_eta():
    clock, lines = Clock(), []
    progress = StepProgress(steps_per_epoch=100, epochs=2, every_s=10, clock=clock, out=lines.append)
    progress.start_epoch(0)
    for _ in range(30):  # 30 steps of 16 rows, 1 s each
        clock.now += 1
        progress.step(samples=16, loss=0.5, lr=1e-4)
    assert len(lines) == 3  # at 10, 20 and 30 s: not one per step
    assert "epoch 1/2  step 10/100" in lines[0]
    assert "16.0 samples/s" in lines[0]
    assert "ETA 1m10s" in lines[-1]  # 70 steps left at 1 s each


def test_no_line_from_a_disabled_rank():
    clock, lines = Clock(), []
    progress = StepProgress(steps_per_epoch=10, epochs=1, enabled=False, every_s=1, clock=clock, out=lines.append)
    progress.start_epoch(0)
    for _ in range(10):
        clock.now += 5
        progress.step(samples=8, loss=1.0, lr=1e-3)
    assert lines == []
    assert progress.global_step == 10  # it still counts, for the step axis


def test_a_resumed_run_continues_the_step_axis():
    progress = StepProgress(steps_per_epoch=25, epochs=4, clock=Clock(), out=lambda line: None)
    progress.start_epoch(2)  # resumed after two finished epochs
    progress.step(samples=8, loss=1.0, lr=1e-3)
    assert progress.global_step == 51


def test_a_trial_label_starts_each_line():
    """Two trials of a sweep print side by side: each line says whose it is."""
    clock, lines = Clock(), []
    progress = StepProgress(steps_per_epoch=5, epochs=1, every_s=1, clock=clock, out=lines.append, label="trial a_0")
    progress.start_epoch(0)
    clock.now += 2
    progress.step(samples=4, loss=0.7, lr=1e-4)
    assert lines and lines[0].startswith("trial a_0  epoch 1/1  step 1/5")


def test_rows_progress_says_rows_done_rate_and_eta_then_the_total_time():
    clock, lines = Clock(), []
    progress = RowProgress(total=100, what="evaluate test", every_s=10, clock=clock, out=lines.append)
    for _ in range(5):  # 5 blocks of 20 rows, 8 s each
        clock.now += 8
        progress.add(20)
    assert len(lines) == 3  # at 16 s, 32 s (10 s apart at least) and the last block
    assert "evaluate test  rows 40/100  2.50 rows/s  ETA 24s" in lines[0]
    assert lines[-1].endswith("rows 100/100  2.50 rows/s  done in 40s")
