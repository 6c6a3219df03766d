"""Rendering, masking, truncation and collation of real protocol conversations on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from eva_core.protocol import IMAGE_PLACEHOLDER, turn_text
from eva_core.sample_video import write_sample_video
from eva_train.encoding.collate import collate
from eva_train.encoding.episodes import blank_image_row
from eva_train.encoding.masking import TemplateError, encode_conversation, truncate
from eva_train.objectives.logprobs import policy_logprobs, token_logprobs
from train_conversations import make_conversation, make_conversations, make_text_conversation
from transformers import AutoModelForImageTextToText, AutoProcessor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_sample_video(tmp_path_factory.mktemp("sft") / "v.mp4", duration=8.0, fps=10, width=336,
                              height=252, gop=10)


@pytest.fixture(scope="module")
def conversations(video):
    return make_conversations(video, 6)


def test_ids_pixels_and_types_equal_the_processors(processor, conversations):
    for sample in conversations:
        enc = encode_conversation(processor, sample.messages)
        text = processor.apply_chat_template(sample.messages, tokenize=False)
        images = [p["image"] for m in sample.messages if isinstance(m["content"], list)
                  for p in m["content"] if p["type"] == "image"]
        ref = processor(text=[text], images=images, return_tensors="pt", return_mm_token_type_ids=True)
        assert torch.equal(enc.input_ids, ref["input_ids"][0])
        assert torch.equal(enc.mm_token_type_ids, ref["mm_token_type_ids"][0].to(torch.int32))
        assert torch.equal(enc.pixel_values, ref["pixel_values"])
        assert torch.equal(enc.image_grid_thw, ref["image_grid_thw"])


def test_only_assistant_content_and_end_token_are_trained(processor, conversations):
    tok = processor.tokenizer
    for sample in conversations:
        enc = encode_conversation(processor, sample.messages)
        replies = [turn_text(m) for m in sample.messages if m["role"] == "assistant"]
        assert tok.decode(enc.input_ids[enc.trained]) == "".join(r + "<|im_end|>" for r in replies)
        assert not enc.trained[enc.mm_token_type_ids == 1].any()  # no image token is a target
        # The header and the newline after <|im_end|> are not trained; the turn's first token is.
        first = int(enc.trained.nonzero()[0])
        assert tok.decode(enc.input_ids[first - 3:first]) == "<|im_start|>assistant\n"
        assert not enc.trained[0]


def test_trained_turns_select_which_replies_train(processor, conversations):
    sample = conversations[0]
    flags = [m["role"] == "assistant" for m in sample.messages]
    last = max(i for i, f in enumerate(flags) if f)
    only_last = [i == last for i in range(len(flags))]
    enc = encode_conversation(processor, sample.messages, only_last)
    assert processor.tokenizer.decode(enc.input_ids[enc.trained]) == turn_text(sample.messages[last]) + "<|im_end|>"
    with pytest.raises(TemplateError, match="only assistant turns"):
        encode_conversation(processor, sample.messages, [True] * len(flags))
    with pytest.raises(TemplateError, match="trained flags"):
        encode_conversation(processor, sample.messages, [True])


def test_image_spans_hold_whole_images(processor, conversations):
    tok = processor.tokenizer
    enc = encode_conversation(processor, conversations[3].messages)  # 4 frames
    assert len(enc.image_spans) == enc.image_grid_thw.shape[0] == 4
    for (start, end), grid in zip(enc.image_spans, enc.image_grid_thw, strict=True):
        assert tok.convert_ids_to_tokens(int(enc.input_ids[start])) == "<|vision_start|>"
        assert tok.convert_ids_to_tokens(int(enc.input_ids[end - 1])) == "<|vision_end|>"
        assert int((enc.mm_token_type_ids[start:end] == 1).sum()) == int(grid.prod()) // 4  # merge 2 x 2


def test_truncation_never_cuts_an_image(processor, conversations):
    enc = encode_conversation(processor, conversations[3].messages)
    for max_length in range(1, len(enc) + 5):
        cut = truncate(enc, max_length)
        assert len(cut) <= max(max_length, 1)
        n = 0 if cut.image_grid_thw is None else cut.image_grid_thw.shape[0]
        # Every image token left belongs to a complete image, and pixel rows match the kept grids.
        assert int((cut.mm_token_type_ids == 1).sum()) == sum(int(g.prod()) // 4 for g in enc.image_grid_thw[:n])
        assert cut.image_spans == enc.image_spans[:n]
        assert torch.equal(cut.input_ids, enc.input_ids[:len(cut)])
        assert cut.truncated == (max_length < len(enc))
        if n:
            assert torch.equal(cut.pixel_values, enc.pixel_values[:cut.pixel_values.shape[0]])
    # A cut inside the second image moves back to that image's start.
    start, end = enc.image_spans[1]
    assert len(truncate(enc, start + 2)) == start
    with pytest.raises(ValueError, match="positive"):
        truncate(enc, 0)


def test_bad_conversations_raise(processor, video):
    sample = make_conversation(video, 1)
    bad = [dict(m) for m in sample.messages]
    bad[3] = {"role": "tool", "content": [{"type": "image", "image": torch.zeros(3, 28, 28)}]}  # float
    with pytest.raises(TemplateError, match="uint8"):
        encode_conversation(processor, bad)
    with pytest.raises(TemplateError, match="video parts"):
        encode_conversation(processor, [{"role": "user", "content": [{"type": "video", "video": "x.mp4"}]}])
    with pytest.raises(TemplateError, match="role"):
        encode_conversation(processor, [{"content": "hi"}])


def test_collate_pads_right_and_counts_padding(processor, conversations):
    encoded = [encode_conversation(processor, s.messages) for s in conversations[:3]]
    batch = collate(encoded, pad_id=processor.tokenizer.pad_token_id)
    lengths = [len(e) for e in encoded]
    assert batch.input_ids.shape == (3, max(lengths))
    assert batch.attention_mask.sum(1).tolist() == lengths
    assert batch.num_tokens == sum(lengths)
    assert batch.padding_fraction == pytest.approx(1 - sum(lengths) / (3 * max(lengths)))
    assert batch.pixel_values.shape[0] == sum(e.pixel_values.shape[0] for e in encoded)
    assert not batch.trained[batch.attention_mask == 0].any()
    assert IMAGE_PLACEHOLDER not in processor.tokenizer.decode(batch.input_ids[0])


def test_selected_logprobs_equal_full_logits(processor, conversations, tiny_model_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    encoded = [encode_conversation(processor, s.messages) for s in conversations[:3]]
    batch = collate(encoded, pad_id=processor.tokenizer.pad_token_id)
    with torch.no_grad():
        got = policy_logprobs(model, batch)
        logits = model(**batch.model_inputs()).logits
    full = torch.log_softmax(logits.float(), -1)[:, :-1].gather(2, batch.input_ids[:, 1:, None]).squeeze(2)
    want = torch.zeros_like(got)
    want[:, 1:] = full
    want = want * batch.trained
    assert torch.allclose(got, want, atol=1e-5)
    assert (got[batch.trained] < 0).all()
    # Padding does not change a row: the shortest conversation alone gives the same log-probs.
    i = min(range(3), key=lambda k: len(encoded[k]))
    with torch.no_grad():
        alone = policy_logprobs(model, collate([encoded[i]], pad_id=processor.tokenizer.pad_token_id))
    assert torch.allclose(alone[0], got[i, :len(encoded[i])], atol=1e-5)


def test_a_text_only_batch_runs_beside_the_blank_image_row(processor, video, conversations, tiny_model_dir):
    """`policy_logprobs(blank=)`, what a sharded model's ranks need: the vision tower runs on a batch
    without an image, the batch's rows get the log-probs they get alone, the blank row is not returned;
    a batch with an image runs as it is."""
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    towers = []
    model.model.visual.register_forward_hook(lambda *_: towers.append(1))
    blank = blank_image_row(processor)
    pad = processor.tokenizer.pad_token_id
    text = collate([encode_conversation(processor, make_text_conversation(video, i).messages) for i in range(2)],
                   pad_id=pad)
    with torch.no_grad():
        alone = policy_logprobs(model, text)
        assert not towers
        beside = policy_logprobs(model, text, blank=blank)
    assert towers == [1] and beside.shape == alone.shape == text.trained.shape
    assert torch.allclose(beside, alone, atol=1e-6) and (beside[text.trained] < 0).all()
    images = collate([encode_conversation(processor, conversations[0].messages)], pad_id=pad)
    with torch.no_grad():
        assert torch.equal(policy_logprobs(model, images, blank=blank), policy_logprobs(model, images))


def test_token_logprobs_by_hand():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    got = token_logprobs(logits, torch.tensor([1, 0]))
    # log(1/2); 2 - log(e^2 + 1)
    assert torch.allclose(got, torch.tensor([-0.6931472, 2 - 2.1269280]), atol=1e-6)
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(logits, torch.tensor([1]))
    # The rollout engine's distribution: id 2 suppressed, T = 1/2 doubles [0, ln 3] -> (1/10, 9/10).
    tempered = token_logprobs(torch.tensor([[0.0, math.log(3.0), 5.0]] * 2), torch.tensor([0, 1]),
                              suppress=[2], temperature=0.5)
    assert torch.allclose(tempered.exp(), torch.tensor([0.1, 0.9]), atol=1e-6)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        token_logprobs(logits, torch.tensor([1, 0]), temperature=0.0)


def test_frames_kept_until_collation_give_the_same_batch(processor, conversations):
    eager = [encode_conversation(processor, s.messages) for s in conversations[:4]]
    lazy = [encode_conversation(processor, s.messages, with_pixels=False) for s in conversations[:4]]
    for e, lz in zip(eager, lazy, strict=True):
        assert lz.pixel_values is None and len(lz.images) == e.image_grid_thw.shape[0]
        assert torch.equal(lz.image_grid_thw, e.image_grid_thw)  # grids from the sizes alone
        assert torch.equal(lz.input_ids, e.input_ids) and torch.equal(lz.trained, e.trained)
    pad = processor.tokenizer.pad_token_id
    a = collate(eager, pad_id=pad)
    b = collate([truncate(s, 10_000) for s in lazy], pad_id=pad, image_processor=processor.image_processor)
    assert torch.equal(a.pixel_values, b.pixel_values) and torch.equal(a.image_grid_thw, b.image_grid_thw)
    assert torch.equal(a.input_ids, b.input_ids)
    cut = truncate(lazy[3], lazy[3].image_spans[1][0] + 1)  # keeps the first image only
    assert len(cut.images) == 1 and collate([cut], pad_id=pad, image_processor=processor.image_processor)\
        .pixel_values.shape[0] == int(cut.image_grid_thw.prod())
    with pytest.raises(ValueError, match="image processor"):
        collate(lazy, pad_id=pad)


def test_trained_from_trains_a_turn_from_its_credited_character(processor, conversations):
    """A credited undesirable is trained from the first character that differs from a success,
    the token that character falls in included; the prompt stays the opening turns."""
    tok = processor.tokenizer
    sample = conversations[3]
    flags = [m["role"] == "assistant" for m in sample.messages]
    last = max(i for i, f in enumerate(flags) if f)
    only_last = [i == last for i in range(len(flags))]
    reply = turn_text(sample.messages[last])
    char = reply.index("clearly") + 2  # inside the word: its whole token is blamed
    whole = encode_conversation(processor, sample.messages, only_last)
    credited = encode_conversation(processor, sample.messages, only_last, trained_from=(last, char))
    trained = tok.decode(credited.input_ids[credited.trained])
    assert trained.endswith(reply[char:] + "<|im_end|>") and len(trained) < len(reply) + len("<|im_end|>")
    assert credited.num_trained < whole.num_trained
    assert not (credited.trained & ~whole.trained).any()  # a subset of the turn's tokens
    first = encode_conversation(processor, sample.messages)
    # the prompt ends where the first assistant turn begins, whichever turns are trained
    assert credited.prompt_length == whole.prompt_length == first.prompt_length == int(first.trained.nonzero()[0])
    with pytest.raises(TemplateError, match="not the first trained turn"):
        encode_conversation(processor, sample.messages, trained_from=(last, 0))
    with pytest.raises(TemplateError, match="rendered text"):
        encode_conversation(processor, sample.messages, only_last, trained_from=(last, len(reply)))
