"""`raylane.openmp.release_thread_pool` ends the calling thread's OpenMP workers (a serving
replica's loading thread hands its team back, so the thread that decodes has the cores alone).
Run in a fresh interpreter: the test session's own threads have teams of their own."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, time
    import torch
    from raylane.openmp import release_thread_pool

    def threads():
        return len(os.listdir("/proc/self/task"))

    torch.set_num_threads(2)
    before = threads()
    torch.ones(4_000_000).exp_()  # a parallel region: this thread's team (one worker) starts
    with_team = threads()
    released = release_thread_pool()
    deadline = time.monotonic() + 10
    while threads() >= with_team and time.monotonic() < deadline:
        time.sleep(0.01)
    after = threads()
    torch.ones(4_000_000).exp_()  # computing again starts a new team
    print(before, with_team, released, after, threads())
    """
)


def test_a_released_thread_s_openmp_workers_end_and_a_new_team_starts_when_it_computes_again():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True)
    before, with_team, released, after, again = out.stdout.split()
    assert released == "True"
    assert int(with_team) == int(before) + 1  # 2 torch threads: the caller and one worker
    assert int(after) == int(before) and int(again) == int(with_team)
