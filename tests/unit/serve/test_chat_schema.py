"""What the chat routes accept: the OpenAI request shapes, strict, with messages that name the fault."""

import pytest
from pydantic import ValidationError

from raylane.serve.chat_schema import ChatRequest, CompletionRequest, request_models

Chat, Completion = request_models(32)
HI = [{"role": "user", "content": "hi"}]


def test_a_full_chat_request_is_accepted_and_a_single_stop_becomes_a_list():
    request = Chat(
        model="anything",
        messages=[{"role": "system", "content": "be brief"}, *HI, {"role": "assistant", "content": "hello"}],
        max_tokens=32,
        temperature=0.7,
        top_p=0.9,
        stop="\n",
        n=1,
        stream=True,
    )
    assert request.stop == ["\n"] and request.stream and [m.role for m in request.messages][-1] == "assistant"
    assert Chat(messages=HI).max_tokens is None  # missing options take the model's defaults


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"messages": []}, "at least 1 item"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "unknown role 'robot'"),
        ({"messages": [{"role": "user"}]}, "Field required"),
        ({"messages": [{"role": "user", "content": 5}]}, "valid string"),
        ({"messages": "hi"}, "valid list"),
        ({"max_tokens": 33}, r"limit of 32 \(serve.max_new_tokens_ceiling\)"),
        ({"max_tokens": 0}, "greater than or equal to 1"),
        ({"max_tokens": "ten"}, "valid integer"),
        ({"temperature": 2.5}, "less than or equal to 2"),
        ({"temperature": -0.1}, "greater than or equal to 0"),
        ({"top_p": 0}, "greater than 0"),
        ({"temperature": float("nan")}, "finite number"),
        ({"temperature": float("inf")}, "finite number"),
        ({"temperature": 1e-300}, "0 \\(greedy\\) or at least 0.01"),
        ({"temperature": 1e-45}, "0 \\(greedy\\) or at least 0.01"),
        ({"top_p": float("nan")}, "finite number"),
        ({"max_tokens": float("inf")}, "finite number"),
        ({"top_p": 1.5}, "less than or equal to 1"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4 stop strings"),
        ({"stop": [""]}, "1 to 200 characters"),
        ({"n": 2}, "n=2"),
        ({"stream": "maybe"}, "valid boolean"),
        ({"logprobs": True}, "Extra inputs are not permitted"),
    ],
)
def test_bad_chat_requests_are_refused_naming_the_fault(changes, message):
    with pytest.raises(ValidationError, match=message):
        Chat(**{"messages": HI, **changes})


def test_completion_requests_take_a_prompt_and_the_same_options():
    assert Completion(prompt="once upon a time", max_tokens=8, stop=["."]).prompt == "once upon a time"
    with pytest.raises(ValidationError, match="Field required"):
        Completion(max_tokens=8)
    with pytest.raises(ValidationError, match="Extra inputs"):
        Completion(prompt="x", messages=HI)
    with pytest.raises(ValidationError, match="limit of 32"):
        Completion(prompt="x", max_tokens=100)


def test_each_deployment_gets_its_own_ceiling_and_the_base_classes_keep_theirs():
    small, _ = request_models(4)
    with pytest.raises(ValidationError, match="limit of 4"):
        small(messages=HI, max_tokens=5)
    assert Chat(messages=HI, max_tokens=32).max_tokens == 32
    assert ChatRequest(messages=HI, max_tokens=512).max_tokens == 512
    assert issubclass(Completion, CompletionRequest)
