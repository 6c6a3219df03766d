"""Rollouts for training on the tiny Qwen2.5-VL: the engine through a peft wrapper, seeded samples,
shared group prefill, the context budget, and the key property: the training forward over
`encode_episode`'s sequence gives the log-probabilities the engine sampled with."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from eva_core.agent import AgentConfig, Task, run_episodes
from eva_core.backends import TransformersPolicy
from eva_core.backends.forced import AppendToolCall, frame_select_call
from eva_core.backends.token_context import find_rope_index
from eva_core.episode import StopReason
from eva_core.policy import GenerationConfig, GenerationRequest, RolloutEngine
from eva_core.protocol import SYSTEM_PROMPT
from eva_core.sample_video import write_sample_video
from eva_train.encoding.collate import collate
from eva_train.encoding.episodes import encode_episode
from eva_train.model.loading import LoraSpec, add_lora
from eva_train.objectives.logprobs import policy_logprobs
from transformers import AutoModelForImageTextToText, AutoProcessor

QUESTION = "What happens in the video? A. a dog runs B. a car stops"
SAMPLE = GenerationConfig(max_new_tokens=6, temperature=1.0, seed=3)
GREEDY = GenerationConfig(max_new_tokens=6)


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return AutoProcessor.from_pretrained(tiny_model_dir)


def load(tiny_model_dir):
    return AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)


@pytest.fixture(scope="module")
def base(tiny_model_dir, processor, one_torch_thread):
    return TransformersPolicy(load(tiny_model_dir), processor)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_sample_video(tmp_path_factory.mktemp("rollouts") / "v.mp4", duration=6.0, fps=10, width=336,
                              height=252, gop=10)


def lora_model(tiny_model_dir, *, nonzero: bool):
    model = add_lora(load(tiny_model_dir), LoraSpec(r=4, alpha=8, dropout=0.0))
    if nonzero:  # B starts at 0 (the base function); a trained adapter's is not
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def rollout(engine, video, config=SAMPLE, keys=((0, 0, 0), (0, 0, 1)), turns=3):
    """Episodes forced through `turns` turns with 2 frames per tool turn."""
    forced = AppendToolCall(engine, "\n" + frame_select_call(0.0, 6.0, 2, 0.25))
    tasks = [Task(video, QUESTION, episode_id=f"e{i}", sample_key=k) for i, k in enumerate(keys)]
    return run_episodes(forced, tasks, AgentConfig(max_turns=turns, generation=config))


def token_trace(episode):
    return [(s.tokens.prompt_ids, s.tokens.completion_ids) for s in episode.steps]


def test_peft_with_zero_lora_equals_the_base(tiny_model_dir, processor, base, video):
    peft = TransformersPolicy(lora_model(tiny_model_dir, nonzero=False), processor)
    assert isinstance(peft, RolloutEngine) and peft._rope_index is not None
    messages = [{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
                {"role": "user", "content": [{"type": "text", "text": QUESTION},
                                             {"type": "image", "image": torch.zeros(3, 56, 84, dtype=torch.uint8)}]}]
    logits = [e._prefill(GenerationRequest(messages), e._encode(GenerationRequest(messages)), 0.0, 1, None).logits
              for e in (base, peft)]
    assert torch.equal(logits[0], logits[1])
    a, b = rollout(base, video, GREEDY)[0], rollout(peft, video, GREEDY)[0]
    assert a.rounds == 3 and token_trace(a) == token_trace(b)


def test_mrope_model_without_get_rope_index_is_an_error(base):
    class Wrapper(torch.nn.Module):  # hides the model's modules, keeps its M-RoPE config
        config = base.model.config

    with pytest.raises(ValueError, match="M-RoPE but no submodule defines get_rope_index"):
        find_rope_index(Wrapper())


def test_modes_are_restored(base):
    request = [GenerationRequest([{"role": "user", "content": "Hi"}])]
    base.model.train()
    base.model.model.visual.eval()  # a mixed state comes back as it was
    base.generate(request, GenerationConfig(max_new_tokens=2))
    assert base.model.training and base.model.model.language_model.training and not base.model.model.visual.training
    base.model.eval()
    base.generate(request, GenerationConfig(max_new_tokens=2))
    assert not any(m.training for m in base.model.modules())


def test_samples_are_reproducible_and_distinct(base, video):
    keys = ((0, 0, 0), (0, 0, 1), (1, 0, 0))  # (step, prompt, sample)
    first, again = rollout(base, video, keys=keys, turns=2), rollout(base, video, keys=keys[::-1], turns=2)
    again = again[::-1]
    for a, b in zip(first, again, strict=True):  # same key, same episode, whatever its batch position
        assert token_trace(a) == token_trace(b)
        assert [p for s in a.steps for p in s.tokens.completion_logprobs] == pytest.approx(
            [p for s in b.steps for p in s.tokens.completion_logprobs], abs=1e-5)
    traces = [token_trace(e) for e in first]
    assert traces[0] != traces[1] and traces[0] != traces[2]  # another sample, another step
    # Each turn draws new numbers: the two turns of one sample do not repeat their first tokens.
    assert len({tuple(s.tokens.completion_ids) for s in first[0].steps}) == 2


def test_group_prefill_is_shared(base, tiny_model_dir, processor):
    messages = [{"role": "user", "content": QUESTION}]
    group = [GenerationRequest(messages, f"g{i}", sample_key=(0, 0, i)) for i in range(4)]
    shared = base.generate(group, SAMPLE)
    alone = TransformersPolicy(base.model, processor, share_prefill=False).generate(group, SAMPLE)
    n = shared[0].prompt_tokens
    assert [g.prefill_tokens for g in shared] == [n, 0, 0, 0]
    assert [g.prefill_tokens for g in alone] == [n] * 4
    assert [g.tokens.completion_ids for g in shared] == [g.tokens.completion_ids for g in alone]
    assert len({tuple(g.tokens.completion_ids) for g in shared}) == 4
    for i in range(4):
        base.release(f"g{i}")


@pytest.mark.parametrize(("adapters", "temperature"), [(False, 1.0), (True, 1.0), (False, 0.7)],
                         ids=["plain", "lora", "tempered"])
def test_training_forward_gives_the_sampling_logprobs(adapters, temperature, tiny_model_dir, processor, base, video):
    engine = TransformersPolicy(lora_model(tiny_model_dir, nonzero=True), processor) if adapters else base
    episodes = rollout(engine, video, config=dataclasses.replace(SAMPLE, temperature=temperature))
    for episode in episodes:
        assert episode.rounds == 3 and sum(len(s.frames) for s in episode.steps) == 4
        encoded = encode_episode(episode, processor)
        conversation = encoded.conversation
        assert int(conversation.trained.sum()) == sum(len(s.tokens.completion_ids) for s in episode.steps)
        assert conversation.image_grid_thw.shape[0] == 4
        batch = collate([conversation], pad_id=processor.tokenizer.pad_token_id)
        engine.model.eval()
        with torch.no_grad():
            logps = policy_logprobs(engine.model, batch, suppress=engine.suppress, temperature=temperature)[0]
        trained = conversation.trained
        gap = (logps[trained] - encoded.sampled_logprobs[trained]).abs().max().item()
        assert gap < 1e-4, gap
        # The sequence is exactly what was fed and sampled, turn after turn.
        ids = [t for s in episode.steps for t in s.tokens.prompt_ids + s.tokens.completion_ids]
        assert conversation.input_ids.tolist() == ids


def test_context_budget_ends_the_episode_without_the_last_images(base, video, processor):
    full = rollout(base, video, GREEDY, keys=((0, 0, 0),), turns=2)[0]
    limit = full.steps[1].prompt_tokens - 1  # the second prompt (after the first tool turn) does not fit
    cut = rollout(base, video, GenerationConfig(max_new_tokens=6, max_context_tokens=limit), keys=((0, 0, 0),))[0]
    assert cut.stop_reason == StopReason.CONTEXT_EXCEEDED and cut.rounds == 1
    assert cut.steps[0].tool_text is not None and cut.steps[0].frames == []
    assert token_trace(cut) == token_trace(full)[:1]
    encoded = encode_episode(cut, processor).conversation
    assert encoded.image_grid_thw is None and len(encoded) == full.steps[0].prompt_tokens + len(
        full.steps[0].tokens.completion_ids)
    assert type(cut).from_json(cut.to_json()).stop_reason == StopReason.CONTEXT_EXCEEDED


def test_encode_episode_rejects_untokenized_steps(base, video, processor):
    episode = rollout(base, video, GREEDY, keys=((0, 0, 0),), turns=2)[0]
    episode.steps[0].frames = episode.steps[0].frames[:1]
    with pytest.raises(ValueError, match="2 runs of image placeholders but 1 frames"):
        encode_episode(episode, processor)
    episode.steps[0].tokens = None
    with pytest.raises(ValueError, match="step 0 has no token record"):
        encode_episode(episode, processor)


def test_sampling_logprobs_by_hand():
    from eva_core.backends.sampling import sample_rows, sample_seed, sampling_logprobs

    ln3 = float(torch.log(torch.tensor(3.0)))
    logits = torch.tensor([[0.0, ln3]])
    # softmax([0, ln 3]) = (1/4, 3/4).
    assert sampling_logprobs(logits, temperature=1.0).exp().tolist()[0] == pytest.approx([0.25, 0.75])
    # T = 1/2 doubles the logits: softmax([0, 2 ln 3]) = (1/10, 9/10).
    assert sampling_logprobs(logits, temperature=0.5).exp().tolist()[0] == pytest.approx([0.1, 0.9])
    # top_p = 0.5: the nucleus is the top token alone (0.75 >= 0.5), renormalised to probability 1.
    assert sampling_logprobs(logits, temperature=1.0, top_p=0.5).tolist()[0] == [float("-inf"), 0.0]
    # Suppressing token 1 leaves token 0 with probability 1; greedy scores at temperature 1.
    assert sampling_logprobs(logits, suppress=[1]).tolist()[0] == [0.0, float("-inf")]
    tokens, logps = sample_rows(logits.expand(2, 2), temperature=0.0)
    assert tokens.tolist() == [1, 1] and logps.tolist() == pytest.approx([torch.log(torch.tensor(0.75)).item()] * 2)
    draws = [sample_rows(logits, temperature=1.0, generators=[torch.Generator().manual_seed(s)])[0].item()
             for s in range(400)]
    assert 0.68 < sum(draws) / 400 < 0.82  # token 1 has probability 3/4
    assert sample_seed(1, (0, 2, 3), 0) == sample_seed(1, (0, 2, 3), 0)
    assert len({sample_seed(1, (0, 2, 3), 0), sample_seed(1, (0, 2, 4), 0), sample_seed(1, (1, 2, 3), 0),
                sample_seed(1, (0, 2, 3), 1), sample_seed(2, (0, 2, 3), 0)}) == 5


def test_sync_weights_drops_caches_computed_with_old_weights(base):
    base.generate([GenerationRequest([{"role": "user", "content": QUESTION}], "sync")], GREEDY)
    assert "sync" in base.store
    base.sync_weights()
    assert "sync" not in base.store and "sync" in base.tokens  # the ids stay: they do not depend on weights
    with pytest.raises(ValueError, match="shares the training module's weights"):
        base.sync_weights(base.model.named_parameters())
    base.release("sync")
    assert "sync" not in base.tokens
