"""The in-process backend on the tiny Qwen2.5-VL: greedy determinism, KV-cache reuse that
changes nothing but the work done, batching, sampling, and the prefix rules it relies on."""

from __future__ import annotations

import pytest
import torch
from eva_core.backends import OpenAIPolicy, TransformersPolicy, load_policy
from eva_core.backends.forced import AppendToolCall, frame_select_call
from eva_core.backends.prefix_cache import (
    EpisodeState,
    EpisodeStore,
    ImageSpan,
    image_key,
    image_spans,
    reusable_prefix,
)
from eva_core.backends.sampling import next_tokens
from eva_core.backends.transformers_backend import message_images
from eva_core.policy import GenerationConfig, GenerationRequest, Policy
from eva_core.protocol import SYSTEM_PROMPT

SYSTEM = SYSTEM_PROMPT
GREEDY = GenerationConfig(max_new_tokens=16)
CALL = frame_select_call(0.0, 9.0, 2, 0.5)


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return TransformersPolicy.from_pretrained(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def no_reuse(policy):
    return TransformersPolicy(policy.model, policy.processor, reuse_kv_cache=False)


def frames(seed: int, sizes=((56, 84), (28, 56))) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in sizes]


def opening(question: str = "What happens? A. x B. y") -> list[dict]:
    return [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
            {"role": "user", "content": [{"type": "text", "text": f"Video Length: 9 seconds. Original video "
                                                                   f"resolution: 252p. {question}"}]}]


def tool_turn(images: list[torch.Tensor]) -> dict:
    content = [{"type": "text", "text": "<tool_response>"}]
    for i, image in enumerate(images):
        content += [{"type": "text", "text": ("\n" if i else "") + f"Frame {i} at [00:0{i}]: "},
                    {"type": "image", "image": image}]
    content.append({"type": "text", "text": "\nIf more information is needed, call the frame selection tool "
                                            "again.\n\nQuestion: What happens?</tool_response>"})
    return {"role": "tool", "content": content}


def run_turns(policy: Policy, turns: int, episode_id: str, config: GenerationConfig = GREEDY):
    """A conversation that grows by a reply (plus an appended tool call the model did not write)
    and a tool turn with two fresh frames per turn. Returns the generations."""
    messages, out = opening(), []
    for turn in range(turns):
        gen = policy.generate([GenerationRequest(list(messages), episode_id)], config)[0]
        out.append(gen)
        messages += [{"role": "assistant", "content": [{"type": "text", "text": gen.text + "\n" + CALL}]},
                     tool_turn(frames(turn))]
    return out


def test_greedy_is_deterministic(policy, no_reuse):
    a = policy.generate([GenerationRequest(opening(), "det-a")], GREEDY)[0]
    b = no_reuse.generate([GenerationRequest(opening(), "det-b")], GREEDY)[0]
    assert a.text == b.text and a.tokens.completion_ids == b.tokens.completion_ids
    assert a.completion_tokens == len(a.tokens.completion_ids)
    assert a.completion_tokens == GREEDY.max_new_tokens or a.tokens.completion_ids[-1] in policy.eos_ids
    assert a.text == policy.tokenizer.decode(a.tokens.completion_ids, skip_special_tokens=True)
    policy.release("det-a")


def test_matches_model_generate(policy, no_reuse):
    """The decode loop (M-RoPE positions computed from get_rope_index) equals transformers' generate."""
    messages = opening() + [{"role": "assistant", "content": [{"type": "text", "text": CALL}]}, tool_turn(frames(7))]
    mine = no_reuse.generate([GenerationRequest(messages)], GREEDY)[0]
    text = policy.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    enc = policy.processor(text=[text], images=message_images(messages), return_tensors="pt")
    with torch.no_grad():
        out = policy.model.generate(**enc, max_new_tokens=GREEDY.max_new_tokens, do_sample=False)
    assert out[0, enc["input_ids"].shape[1]:].tolist() == mine.tokens.completion_ids
    assert mine.prompt_tokens == enc["input_ids"].shape[1]
    assert mine.visual_tokens == int((enc["input_ids"] == policy.model.config.image_token_id).sum()) == 6 + 2


def test_kv_reuse_changes_nothing_but_the_work(policy, no_reuse):
    turns = 4
    with_reuse = run_turns(policy, turns, "reuse")
    without = run_turns(no_reuse, turns, "reuse")
    assert [g.text for g in with_reuse] == [g.text for g in without]
    assert [g.tokens.completion_ids for g in with_reuse] == [g.tokens.completion_ids for g in without]
    assert [g.prompt_tokens for g in with_reuse] == [g.prompt_tokens for g in without]
    # Without reuse every turn prefills its whole prompt.
    assert [g.prefill_tokens for g in without] == [g.prompt_tokens for g in without]
    # With reuse turn k prefills only what turn k-1 did not compute: at least all of turn
    # k-1's prompt is reused (less one token, if the reply starts with a newline that BPE
    # merges with the template's), at most that plus the reply tokens the loop fed back.
    for prev, cur in zip(with_reuse, with_reuse[1:], strict=False):
        reused = cur.extra["reused_tokens"]
        assert cur.prefill_tokens == cur.prompt_tokens - reused
        assert prev.prompt_tokens - 1 <= reused <= prev.prompt_tokens + prev.completion_tokens - 1
    # Summed over the episode, prefill with reuse is about one final context, not the sum of all.
    final = with_reuse[-1].prompt_tokens
    assert sum(g.prefill_tokens for g in with_reuse) <= final + turns  # generated tokens were fed in decode
    assert sum(g.prefill_tokens for g in without) > 2 * final
    policy.release("reuse")
    assert "reuse" not in policy.store


def test_changed_image_is_encoded_again(policy, no_reuse):
    """Same token ids, other pixels: the cache is cut back to the first changed image."""
    messages = opening() + [{"role": "assistant", "content": [{"type": "text", "text": CALL}]}, tool_turn(frames(1))]
    policy.generate([GenerationRequest(messages, "img")], GREEDY)
    changed = messages[:-1] + [tool_turn([frames(1)[0], frames(2)[1]])]  # second frame: same size, new pixels
    got = policy.generate([GenerationRequest(changed, "img")], GREEDY)[0]
    ids = policy.processor(text=[policy.processor.apply_chat_template(changed, tokenize=False,
                                                                        add_generation_prompt=True)],
                           images=message_images(changed), return_tensors="pt")["input_ids"][0].tolist()
    second = image_spans(ids, policy.image_token_id, ["a", "b"])[1]
    assert got.extra["reused_tokens"] == second.start
    assert got.text == no_reuse.generate([GenerationRequest(changed)], GREEDY)[0].text
    policy.release("img")


def test_batch_equals_one_at_a_time(policy):
    requests = [
        GenerationRequest(opening("Why? A. a B. b"), "b0"),
        GenerationRequest(opening() + [{"role": "assistant", "content": [{"type": "text", "text": CALL}]},
                                       tool_turn(frames(3, ((56, 84), (56, 84), (84, 56))))], "b1"),
        GenerationRequest([{"role": "user", "content": "Hi"}], "b2"),
    ]
    batch = policy.generate(requests, GREEDY)
    for request, got in zip(requests, batch, strict=True):
        policy.release(request.episode_id)
        alone = policy.generate([request], GREEDY)[0]
        assert (got.text, got.tokens.completion_ids, got.prompt_tokens) == (alone.text, alone.tokens.completion_ids,
                                                                     alone.prompt_tokens)
        policy.release(request.episode_id)
    with pytest.raises(ValueError, match="share an episode_id"):
        policy.generate([requests[0], requests[0]], GREEDY)


def test_sampling_is_seeded(policy):
    config = GenerationConfig(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=11)
    a = policy.generate([GenerationRequest(opening())], config)[0]
    b = policy.generate([GenerationRequest(opening())], config)[0]
    c = policy.generate([GenerationRequest(opening())], GenerationConfig(max_new_tokens=12, temperature=1.0, seed=12))[0]
    assert a.tokens.completion_ids == b.tokens.completion_ids
    assert a.tokens.completion_ids != c.tokens.completion_ids  # 12 tokens over a ~1000-token vocabulary


def test_suppressed_tokens_never_appear(policy):
    gen = policy.generate([GenerationRequest(opening())], GenerationConfig(max_new_tokens=64, temperature=2.0, seed=0))
    assert policy.suppress and not set(gen[0].tokens.completion_ids) & set(policy.suppress)


def test_forced_tool_call_drives_turns(policy):
    forced = AppendToolCall(policy, "\n" + CALL)
    gen = forced.generate([GenerationRequest(opening(), "forced")], GREEDY)[0]
    assert gen.text.endswith(CALL) and gen.completion_tokens <= GREEDY.max_new_tokens
    forced.release("forced")
    assert "forced" not in policy.store


def test_load_policy_picks_the_backend(tiny_model_dir, tmp_path):
    assert isinstance(load_policy(str(tiny_model_dir), device="cpu"), TransformersPolicy)
    assert isinstance(load_policy("http://127.0.0.1:1/v1"), OpenAIPolicy)
    with pytest.raises(FileNotFoundError, match="neither an http"):
        load_policy(str(tmp_path / "missing"))


# -- pure pieces --------------------------------------------------------------------------------

def test_reusable_prefix_rules():
    img = 9
    cached = [1, 2, img, img, img, 3, 4, 5]
    spans = [ImageSpan(2, 5, "x")]
    # Common prefix 6 (diverges at index 6); the image is identical: reuse 6.
    assert reusable_prefix(cached, spans, [1, 2, img, img, img, 3, 7, 7], spans) == 6
    # Same ids, other pixels: cut back to the image's start.
    assert reusable_prefix(cached, spans, [1, 2, img, img, img, 3, 7, 7], [ImageSpan(2, 5, "y")]) == 2
    # A longer image run diverges inside the image: cut back to its start.
    assert reusable_prefix(cached, spans, [1, 2, img, img, img, img, 3, 4], [ImageSpan(2, 6, "x")]) == 2
    # Identical prompt: one token is always left to prefill.
    assert reusable_prefix(cached, spans, cached, spans) == len(cached) - 1
    assert reusable_prefix([], [], [1, 2], []) == 0


def test_image_spans_and_keys():
    assert image_spans([0, 5, 5, 1, 5, 2], 5, ["a", "b"]) == [ImageSpan(1, 3, "a"), ImageSpan(4, 5, "b")]
    with pytest.raises(ValueError, match="2 runs of image tokens for 1 images"):
        image_spans([5, 1, 5], 5, ["a"])
    with pytest.raises(ValueError, match="start < end"):
        ImageSpan(3, 3, "a")
    x = torch.zeros(3, 28, 28, dtype=torch.uint8)
    y = x.clone()
    y[0, 0, 0] = 1
    assert image_key(x) == image_key(x.clone()) != image_key(y)
    assert image_key(x) != image_key(x.reshape(3, 14, 56))  # same bytes, other shape


def test_episode_store_is_lru():
    store = EpisodeStore(capacity=2)
    state = EpisodeState([1], [], [(torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2))])
    for name in ("a", "b", "c"):
        store.put(name, state)
    assert "a" not in store and len(store) == 2
    assert store.take("b") is state and "b" not in store
    with pytest.raises(ValueError, match="1 ids"):
        EpisodeState([1], [], [(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))])


def test_next_tokens():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9], [5.0, 0.0, 0.0, 0.0]])
    assert next_tokens(logits).tolist() == [1, 0]
    assert next_tokens(logits, suppress=[1, 0]).tolist() == [3, 2]
    # top_p small keeps only the top token: sampling equals greedy.
    g = torch.Generator().manual_seed(0)
    assert next_tokens(logits, temperature=1.0, top_p=1e-6, generator=g).tolist() == [1, 0]
    # Sampling follows the distribution: softmax([0, ln 3]) = (0.25, 0.75).
    two = torch.tensor([[0.0, float(torch.log(torch.tensor(3.0)))]]).expand(20000, 2)
    frac = next_tokens(two, temperature=1.0, generator=torch.Generator().manual_seed(1)).float().mean().item()
    assert abs(frac - 0.75) < 0.015
    with pytest.raises(ValueError, match="top_p"):
        next_tokens(logits, top_p=0.0)


def test_image_given_as_a_path_equals_the_tensor(policy, tmp_path):
    from PIL import Image

    image = frames(4, ((56, 84),))[0]
    path = tmp_path / "frame.png"
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    base = opening() + [{"role": "assistant", "content": [{"type": "text", "text": CALL}]}]
    as_tensor = policy.generate([GenerationRequest(base + [tool_turn([image])])], GREEDY)[0]
    as_path = policy.generate([GenerationRequest(base + [tool_turn([str(path)])])], GREEDY)[0]
    assert (as_path.text, as_path.prompt_tokens, as_path.visual_tokens) == (as_tensor.text, as_tensor.prompt_tokens, 6)
    assert policy.generate([], GREEDY) == []


def test_batched_episodes_with_reuse_equal_without(policy, no_reuse, tmp_path):
    """Two episodes in lockstep: decoding stitches caches of different lengths (left-padded)."""
    agent = pytest.importorskip("eva_core.agent")
    from eva_core.sample_video import write_sample_video

    videos = [write_sample_video(tmp_path / f"v{i}.mp4", duration=6.0 + 3 * i, fps=10, width=336, height=252,
                                 gop=10) for i in range(2)]
    config = agent.AgentConfig(max_turns=3, generation=GREEDY)
    runs = []
    for p in (policy, no_reuse):
        forced = AppendToolCall(p, "\n" + frame_select_call(0.0, 6.0, 3, 0.25))
        tasks = [agent.Task(video=v, prompt=q) for v, q in zip(videos, ["What? A. a B. b", "Who is there?"],
                                                               strict=True)]
        runs.append(agent.run_episodes(forced, tasks, config))
    for a, b in zip(*runs, strict=True):
        assert [s.reply for s in a.steps] == [s.reply for s in b.steps] and len(a.steps) == 3
        assert all(s.prefill_tokens < s.prompt_tokens for s in a.steps[1:])
        assert [s.prefill_tokens for s in b.steps] == [s.prompt_tokens for s in b.steps]
    assert len(policy.store) == 0  # the loop released both episodes


def test_warns_when_the_processor_resizes_frames(policy, tiny_model_dir, caplog):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    processor.image_processor.size = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384}  # Qwen's min
    upscaling = TransformersPolicy(policy.model, processor)
    messages = opening() + [tool_turn(frames(9))]  # the 28x56 frame is below 56x56 pixels
    upscaling.generate([GenerationRequest(messages)], GenerationConfig(max_new_tokens=2))
    assert "resized a 28x56 frame to 56x84" in caplog.text
    caplog.clear()
    policy.generate([GenerationRequest(messages)], GenerationConfig(max_new_tokens=2))
    assert "resized" not in caplog.text
