"""Continuous batching (`raylane.continuous`) on the tiny random Llama: requests that join a
running batch at different steps answer, greedy, exactly as each does alone; a short one that
joins after a long one finishes first; seeded samples, stop strings and cancelling hold per row."""

import shutil
import threading

import pytest
import torch

from raylane.continuous import HEADROOM, ContinuousBatcher, Request, answer_all
from raylane.generate import Generator, Sampling
from raylane.tasks import get_task
from raylane.tasks.saved import SavedTask


def saved_generator(tiny_causal_lm, directory, settings: dict) -> Generator:
    model_dir = directory / "model"
    shutil.copytree(tiny_causal_lm, model_dir)
    SavedTask("causal_lm", [], settings).write(model_dir)
    return Generator(str(model_dir), threads=1)


@pytest.fixture(scope="module")
def generator(tiny_causal_lm, tmp_path_factory) -> Generator:
    return saved_generator(tiny_causal_lm, tmp_path_factory.mktemp("continuous"), {"generation": {"max_new_tokens": 8}})


@pytest.fixture
def batcher(generator):
    running = ContinuousBatcher(generator, max_batch_size=8).start()
    yield running
    running.stop()


class Asked:
    """A request in flight: its tokens as they come, its answer, and the order answers came in."""

    def __init__(self, batcher: ContinuousBatcher, prompt, sampling: Sampling, finished: list, cancelled=None):
        self.done, self.streamed, self.answer = threading.Event(), [], None

        def on_done(outcome):
            self.answer = outcome
            finished.append(self)
            self.done.set()

        batcher.submit(Request(prompt, sampling, on_done, self.streamed.append, cancelled))

    def result(self):
        assert self.done.wait(60), "no answer within a minute"
        assert not isinstance(self.answer, BaseException), self.answer
        return self.answer


def prompts(generator: Generator) -> list[list[int]]:
    return [
        generator.chat_prompt([{"role": "user", "content": "a short question"}]),
        generator.chat_prompt([{"role": "system", "content": "be brief"}, {"role": "user", "content": "longer " * 9}]),
        generator.text_prompt("once upon a time"),
        generator.chat_prompt([{"role": "user", "content": "and a fourth one, of middling length"}]),
    ]


def wait_for_tokens(asked: Asked, n: int) -> None:
    for _ in range(6000):
        if len(asked.streamed) >= n or asked.done.is_set():
            return
        threading.Event().wait(0.005)


def test_requests_joining_at_different_steps_answer_as_each_alone(generator, batcher):
    assert generator.model.dtype == torch.float32  # evaluate.dtype auto, on a CPU
    joining_at_different_steps(generator, batcher)


def test_in_bfloat16_too(tiny_causal_lm, make_cfg, tmp_path):
    # evaluate.dtype bfloat16, saved with the model as training saves its settings: batched rows
    # still answer as each alone, in the dtype the model was evaluated in.
    cfg = make_cfg("task=causal_lm", "evaluate.dtype=bfloat16", "evaluate.max_new_tokens=8")
    generator = saved_generator(tiny_causal_lm, tmp_path, get_task("causal_lm").target.settings(cfg))
    assert generator.model.dtype == torch.bfloat16
    batcher = ContinuousBatcher(generator, max_batch_size=8).start()
    try:
        joining_at_different_steps(generator, batcher)
    finally:
        batcher.stop()


def joining_at_different_steps(generator: Generator, batcher: ContinuousBatcher) -> None:
    asked, finished = prompts(generator), []
    limits = [Sampling(60), Sampling(6), Sampling(25), Sampling(12)]
    first = Asked(batcher, asked[0], limits[0], finished)
    wait_for_tokens(first, 5)  # the others join a batch already decoding, each at its own step
    rest = []
    for prompt, sampling in zip(asked[1:], limits[1:]):
        rest.append(Asked(batcher, prompt, sampling, finished))
        wait_for_tokens(rest[-1], 2)
    answers = [a.result() for a in [first, *rest]]
    alone = [generator.generate([p], [s])[0] for p, s in zip(asked, limits)]
    assert answers == alone
    assert [a.completion_tokens for a in answers] == [60, 6, 25, 12]
    assert [len(a.streamed) for a in [first, *rest]] == [60, 6, 25, 12]  # every token sent as it came
    assert finished[0] is rest[0] and finished[-1] is first  # the 6-token answer left first, the 60 last


def test_seeded_samples_stop_strings_and_cancelling_hold_per_row(generator, batcher):
    asked, finished = prompts(generator), []
    seeded = Sampling(10, temperature=1.0, top_p=0.9, seed=7)
    alone = Asked(batcher, asked[0], seeded, finished).result()
    free = generator.generate([asked[1]], [Sampling(12)])[0]
    stop = free.text.split()[2]
    cancelled = threading.Event()
    endless = Asked(batcher, asked[2], Sampling(400), finished, cancelled)
    wait_for_tokens(endless, 3)
    beside = Asked(batcher, asked[0], seeded, finished)
    cut = Asked(batcher, asked[1], Sampling(12, stop=(stop,)), finished)
    assert beside.result().text == alone.text  # the same seed draws the same tokens, batched or not
    assert alone.text == generator.generate([asked[0]], [seeded])[0].text  # and as static batching draws them
    assert cut.result().finish_reason == "stop" and stop not in cut.result().text
    assert free.text.startswith(cut.result().text)
    cancelled.set()
    assert endless.result().completion_tokens < 400  # left the batch at the next step


def test_a_row_whose_token_cannot_be_drawn_fails_alone(generator, batcher):
    asked, finished = prompts(generator), []
    good = Asked(batcher, asked[1], Sampling(30), finished)
    wait_for_tokens(good, 2)
    # logits / 1e-300 overflow: softmax is NaN and drawing from it raises (the HTTP schema refuses
    # such a temperature; the batcher must not trust that).
    bad = Asked(batcher, asked[0], Sampling(8, temperature=1e-300), finished)
    assert bad.done.wait(60) and isinstance(bad.answer, RuntimeError)
    assert good.result() == generator.generate([asked[1]], [Sampling(30)])[0]
    assert Asked(batcher, asked[2], Sampling(3), finished).result().completion_tokens == 3  # still serving


def test_rows_outgrowing_the_cache_headroom_answer_as_alone(generator, batcher):
    # The batch's KV cache is written in place into buffers HEADROOM columns ahead; a row decoded
    # for several multiples of that reallocates them, between a join and a leave.
    asked, finished = prompts(generator), []
    long = Sampling(3 * HEADROOM + 5)
    first = Asked(batcher, asked[1], long, finished)
    wait_for_tokens(first, HEADROOM + 3)
    beside = Asked(batcher, asked[3], Sampling(HEADROOM // 2), finished)
    assert beside.result() == generator.generate([asked[3]], [Sampling(HEADROOM // 2)])[0]
    assert first.result() == generator.generate([asked[1]], [long])[0]
    assert first.result().completion_tokens == 3 * HEADROOM + 5


def test_answer_all_answers_every_prompt_in_order_as_each_alone(generator):
    # Evaluation and batch generation: 12 prompts through a batch of 4 rows decoded in this
    # thread, rows leaving at their own ends and the next prompts taking their places.
    asked = prompts(generator) * 3
    sampling = Sampling(20)
    answers = answer_all(generator, asked, sampling, max_batch_size=4)
    assert answers == [generator.generate([p], [sampling])[0] for p in asked]
    seeded = Sampling(10, temperature=1.0, top_p=0.9, seed=3)
    assert answer_all(generator, asked[:4], seeded, 2) == [generator.generate([p], [seeded])[0] for p in asked[:4]]


def test_answer_all_raises_the_error_a_row_met(generator):
    with pytest.raises(RuntimeError):
        answer_all(generator, prompts(generator), Sampling(8, temperature=1e-300), max_batch_size=4)
