"""The HTTP backend: against a real `transformers serve` running the tiny model (the session's,
tests/conftest.py), and against small real HTTP servers started in-process for retries, 4xx
errors, the API key, concurrency and image encodings."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import numpy as np
import pytest
import torch
from eva_core.backends import (
    EndpointRequestError,
    EndpointUnavailable,
    OpenAIPolicy,
    TransformersPolicy,
)
from eva_core.backends.forced import AppendToolCall, frame_select_call
from eva_core.backends.openai_backend import backoff_delay, chat_completions_url, reply_text
from eva_core.policy import GenerationConfig, GenerationRequest
from eva_core.protocol import SYSTEM_PROMPT
from PIL import Image
from serving import free_port

SYSTEM = SYSTEM_PROMPT
GREEDY = GenerationConfig(max_new_tokens=16)
CALL = frame_select_call(0.0, 9.0, 2, 0.5)


def frames(seed: int, sizes=((56, 84), (28, 56))) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in sizes]


def opening() -> list[dict]:
    return [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
            {"role": "user", "content": [{"type": "text", "text": "Video Length: 9 seconds. Original video "
                                                                   "resolution: 252p. What happens? A. x B. y"}]}]


def tool_turn(images: list[torch.Tensor]) -> dict:
    content = [{"type": "text", "text": "<tool_response>"}]
    for i, image in enumerate(images):
        content += [{"type": "text", "text": ("\n" if i else "") + f"Frame {i} at [00:0{i}]: "},
                    {"type": "image", "image": image}]
    content.append({"type": "text", "text": "\nIf more information is needed, call the frame selection tool "
                                            "again.\n\nQuestion: What happens?</tool_response>"})
    return {"role": "tool", "content": content}


# -- a real transformers serve -----------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tiny_server):
    """The session's `transformers serve` of the tiny model (tests/conftest.py); its base URL."""
    return tiny_server


@pytest.fixture(scope="module")
def local(tiny_model_dir):
    # A server renders the conversation's text every turn, appended tool calls included: compare
    # with the engine doing the same (token_in=False), not with its token-in rollout mode.
    return TransformersPolicy.from_pretrained(str(tiny_model_dir), device="cpu", dtype="float32", token_in=False)


def test_served_reply_with_images_and_a_tool_turn(served, local):
    remote = OpenAIPolicy(served)
    messages = opening() + [{"role": "assistant", "content": [{"type": "text", "text": "Look.\n" + CALL}]},
                            tool_turn(frames(0))]
    got = remote.generate([GenerationRequest(messages, "t")], GREEDY)[0]
    want = local.generate([GenerationRequest(messages)], GREEDY)[0]
    assert got.text == want.text and got.text  # the raw reply, not stripped or parsed by the server
    # usage: the server counted the same prompt (image tokens included) and completion.
    assert got.prompt_tokens == want.prompt_tokens
    assert got.completion_tokens == want.completion_tokens
    assert got.visual_tokens == want.visual_tokens == 6 + 2
    assert got.prefill_tokens is None and got.tokens is None and got.seconds > 0
    assert remote.model is None  # /v1/models listed nothing: the field is left out and the server's model used


def test_http_and_in_process_agree_over_turns(served, local):
    remote = OpenAIPolicy(served, max_concurrency=2)
    messages, texts = opening(), []
    for turn in range(3):
        request = GenerationRequest(list(messages), "agree")
        got, want = remote.generate([request], GREEDY)[0], local.generate([request], GREEDY)[0]
        assert (got.text, got.prompt_tokens, got.completion_tokens) == (want.text, want.prompt_tokens,
                                                                        want.completion_tokens), turn
        texts.append(got.text)
        # A tool call the model did not write is appended, as the agent would append its parse.
        messages += [{"role": "assistant", "content": [{"type": "text", "text": got.text + "\n" + CALL}]},
                     tool_turn(frames(turn))]
    local.release("agree")
    assert len(set(texts)) > 1  # the turns really differ


def test_http_and_in_process_agree_on_an_episode(served, local, tmp_path):
    agent = pytest.importorskip("eva_core.agent")
    from eva_core.sample_video import write_sample_video

    video = write_sample_video(tmp_path / "v.mp4", duration=9.0, fps=10, width=336, height=252, gop=10)
    config = agent.AgentConfig(max_turns=3, generation=GREEDY)
    suffix = "\n" + frame_select_call(0.0, 9.0, 2, 0.5)
    episodes = [agent.run_episode(AppendToolCall(p, suffix), video, "What happens? A. x B. y", config)
                for p in (local, OpenAIPolicy(served))]
    a, b = episodes
    assert [s.reply for s in a.steps] == [s.reply for s in b.steps]
    assert [s.prompt_tokens for s in a.steps] == [s.prompt_tokens for s in b.steps]
    assert [s.visual_tokens for s in a.steps] == [s.visual_tokens for s in b.steps]
    assert a.stop_reason == b.stop_reason and len(a.steps) == 3


def test_served_model_rejects_a_wrong_model_name(served):
    with pytest.raises(EndpointRequestError) as info:
        OpenAIPolicy(served, model="no-such-model", max_retries=0).generate([GenerationRequest(opening())], GREEDY)
    assert 400 <= info.value.status < 500


# -- small real servers for the failure paths ---------------------------------------------------

def completion(text: str = "fine", **usage) -> dict:
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9, **usage}}


class Stub:
    """A threaded HTTP server on 127.0.0.1 answering POSTs from a script of actions.

    Actions, one per request in order (the last repeats): ("json", status, payload),
    ("drop",) closes the connection without an answer, ("sleep", seconds, payload) answers 200
    after a pause. Requests are recorded with their arrival time, headers and JSON body.
    """

    def __init__(self, actions, models=None):
        self.actions, self.models, self.seen = list(actions), models, []
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                stub._send(self, 200, {"object": "list", "data": [{"id": m} for m in (stub.models or [])]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.seen.append((time.monotonic(), dict(self.headers), body))
                    action = stub.actions[min(len(stub.seen), len(stub.actions)) - 1]
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                done = False

                def finish():  # before the reply leaves: a client may send its next request at once
                    nonlocal done
                    if not done:
                        done = True
                        with stub.lock:
                            stub.in_flight -= 1

                try:
                    if action[0] == "drop":
                        finish()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                    elif action[0] == "sleep":
                        time.sleep(action[1])
                        finish()
                        stub._send(self, 200, action[2])
                    else:
                        finish()
                        stub._send(self, action[1], action[2])
                finally:
                    finish()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def _send(handler, status, payload):
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


FAST = {"backoff_initial": 0.05, "backoff_max": 0.2}


def test_retries_5xx_and_dropped_connections_with_backoff():
    actions = [("json", 503, {"error": {"message": "warming up"}}), ("drop",), ("json", 500, {"detail": "oops"}),
               ("json", 200, completion("at last"))]
    with Stub(actions) as stub:
        got = OpenAIPolicy(stub.url, model="m", max_retries=5, **FAST).generate([GenerationRequest(opening())],
                                                                                  GREEDY)[0]
    assert got.text == "at last" and len(stub.seen) == 4
    gaps = [b[0] - a[0] for a, b in zip(stub.seen, stub.seen[1:], strict=False)]
    # Waits 0.05, 0.1, 0.2 s before the three retries (min(0.2, 0.05 * 2**k)).
    for gap, wait in zip(gaps, [0.05, 0.1, 0.2], strict=True):
        assert wait <= gap < wait + 0.5


def test_gives_up_after_the_retries():
    with Stub([("json", 502, {"error": "bad gateway"})]) as stub:
        policy = OpenAIPolicy(stub.url, model="m", max_retries=2, **FAST)
        with pytest.raises(EndpointUnavailable, match="after 3 attempts; last: HTTP 502: bad gateway"):
            policy.generate([GenerationRequest(opening())], GREEDY)
    assert len(stub.seen) == 3


def test_connection_refused_is_retried_then_reported():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(EndpointUnavailable, match="ConnectError"):
        OpenAIPolicy(url, model="m", max_retries=1, **FAST).generate([GenerationRequest(opening())], GREEDY)


def test_4xx_is_not_retried_and_says_why():
    with Stub([("json", 400, {"error": {"message": "max_tokens is too large"}})]) as stub:
        policy = OpenAIPolicy(stub.url, model="m", max_retries=5, **FAST)
        with pytest.raises(EndpointRequestError, match="HTTP 400: max_tokens is too large") as info:
            policy.generate([GenerationRequest(opening())], GREEDY)
    assert info.value.status == 400 and len(stub.seen) == 1


def test_429_is_retried():
    with Stub([("json", 429, {"error": {"message": "slow down"}}), ("json", 200, completion())]) as stub:
        assert OpenAIPolicy(stub.url, model="m", **FAST).generate([GenerationRequest(opening())], GREEDY)[0].text
    assert len(stub.seen) == 2


def test_api_key_is_sent_but_never_shown(monkeypatch, caplog):
    secret = "sk-test-5f2c0ffee"
    monkeypatch.setenv("EVA_API_KEY", secret)
    caplog.set_level(logging.DEBUG)
    with Stub([("json", 503, {"error": "busy"}), ("json", 401, {"error": {"message": "invalid key"}})]) as stub:
        policy = OpenAIPolicy(stub.url, model="m", **FAST)
        with pytest.raises(EndpointRequestError) as info:
            policy.generate([GenerationRequest(opening())], GREEDY)
    assert stub.seen[0][1]["Authorization"] == f"Bearer {secret}"
    assert secret not in repr(policy) and "api_key=set" in repr(policy)
    assert secret not in str(info.value) and secret not in caplog.text
    assert "retrying" in caplog.text  # the retry was logged, without the key
    monkeypatch.delenv("EVA_API_KEY")
    monkeypatch.setenv("MY_KEY", "other")
    assert OpenAIPolicy(stub.url, api_key_env="MY_KEY")._api_key == "other"


def test_concurrency_limit_and_order():
    payloads = [("sleep", 0.15, completion(f"r{i}")) for i in range(6)]
    with Stub(payloads) as stub:
        policy = OpenAIPolicy(stub.url, model="m", max_concurrency=2)
        requests = [GenerationRequest(opening() + [{"role": "user", "content": f"q{i}"}], f"e{i}") for i in range(6)]
        got = policy.generate(requests, GREEDY)
    assert stub.max_in_flight == 2
    # Replies come back in request order whatever order the server finished in.
    order = {body["messages"][-1]["content"]: i for i, (_, _, body) in enumerate(stub.seen)}
    assert [g.text for g in got] == [f"r{order[f'q{i}']}" for i in range(6)]


def test_body_images_and_usage(tmp_path):
    image = frames(5, ((28, 56),))[0]
    messages = opening() + [tool_turn([image]) | {"tool_call_id": "call-1"}]
    usage = {"prompt_tokens_details": {"cached_tokens": 5}}
    with Stub([("json", 200, completion("ok", **usage))], models=["served-model"]) as stub:
        got = OpenAIPolicy(stub.url + "/v1", **FAST).generate([GenerationRequest(messages)],
                                                              GenerationConfig(max_new_tokens=9, seed=3))[0]
        _, _, body = stub.seen[0]
        file_policy = OpenAIPolicy(stub.url, model="m", image_format="file_url", image_dir=tmp_path)
        file_policy.generate([GenerationRequest(messages)], GREEDY)
        _, _, file_body = stub.seen[1]
    assert body["model"] == "served-model"  # from /v1/models
    assert (body["max_tokens"], body["temperature"], body["seed"], body["stream"]) == (9, 0.0, 3, False)
    assert body["messages"][0] == {"role": "system", "content": SYSTEM}  # text-only turns go as strings
    tool = body["messages"][-1]
    assert tool["role"] == "tool" and tool["tool_call_id"] == "call-1"
    assert [p["type"] for p in tool["content"]] == ["text", "text", "image_url", "text"]
    url = tool["content"][2]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert np.array_equal(decoded, image.permute(1, 2, 0).numpy())  # PNG is lossless
    file_url = file_body["messages"][-1]["content"][2]["image_url"]["url"]
    assert file_url.startswith("file://")
    assert np.array_equal(np.asarray(Image.open(urlparse(file_url).path)), image.permute(1, 2, 0).numpy())
    # usage: cached prompt tokens mean only the rest was prefilled; visual tokens from the image size.
    assert (got.prompt_tokens, got.completion_tokens, got.prefill_tokens, got.visual_tokens) == (7, 2, 2, 1 * 2)


def test_pure_helpers():
    assert [backoff_delay(k, initial=0.5, maximum=3.0) for k in range(4)] == [0.5, 1.0, 2.0, 3.0]
    assert chat_completions_url("http://h:1") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1/v1/chat/completions") == "http://h:1/v1/chat/completions"
    lifted = {"content": "Plan.", "tool_calls": [{"type": "function", "function": {
        "name": "frame_select", "arguments": '{"start_time": 1, "end_time": 2, "nframes": 3}'}}]}
    text, was_lifted = reply_text(lifted)
    assert was_lifted and text == ('Plan.\n<tool_call>\n{"name": "frame_select", "arguments": '
                                   '{"start_time": 1, "end_time": 2, "nframes": 3}}\n</tool_call>')
    assert reply_text({"content": None}) == ("", False)
    with pytest.raises(ValueError, match="http"):
        OpenAIPolicy("localhost:8000")
    with pytest.raises(ValueError, match="image_format"):
        OpenAIPolicy("http://h", image_format="jpeg")


def test_each_frame_is_encoded_once_across_turns(monkeypatch):
    # A frame shown in turn 1 travels again in every later request of the episode; it is encoded
    # once. A different tensor with the same pixels is a different object and is encoded anew.
    from eva_core.backends import openai_backend

    encoded = []
    real = openai_backend.png_bytes
    monkeypatch.setattr(openai_backend, "png_bytes", lambda image: encoded.append(image) or real(image))
    first, second = frames(5, ((28, 56), (56, 28)))
    policy = OpenAIPolicy("http://h", model="m")
    turn_1 = opening() + [tool_turn([first])]
    turn_2 = turn_1 + [{"role": "assistant", "content": [{"type": "text", "text": "More."}]}, tool_turn([second])]
    a = policy.body(turn_1, GREEDY)
    b = policy.body(turn_2, GREEDY)
    assert len(encoded) == 2 and encoded[0] is first and encoded[1] is second
    assert a["messages"][-1]["content"][2] == b["messages"][2]["content"][2]
    policy.body(opening() + [tool_turn([first.clone()])], GREEDY)
    assert len(encoded) == 3
