"""The tiny offline Qwen2.5-VL: built here, loaded back through from_pretrained like a real checkpoint."""

from __future__ import annotations

import hashlib

import pytest
import torch
from eva_core.tiny_model import (
    MAX_PIXELS,
    MIN_PIXELS,
    QWEN_ADDED_TOKENS,
    TinyModelSpec,
    build_tiny_model,
)
from eva_core.tiny_model import (
    tiny_model_dir as cached_tiny_model_dir,
)
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    Qwen2_5_VLForConditionalGeneration,
)

SYSTEM = "Use Frame Select Tool to Anlysis the video and generate an answer to the question."


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    return processor, model


def _tool_conversation(images):
    """System, user, an assistant turn with a tool call, and a protocol tool turn with `images`."""
    content = [{"type": "text", "text": "<tool_response>"}]
    for i, image in enumerate(images):
        content += [{"type": "text", "text": ("\n" if i else "") + f"Frame {i} at [00:0{i}]: "},
                    {"type": "image", "image": image}]
    content.append({"type": "text", "text": "\nIf more information is needed, call the frame selection tool "
                                            "again.\n\nQuestion: What?</tool_response>"})
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": [{"type": "text", "text": "Video Length: 9 seconds. Original video "
                                                               "resolution: 252p. What?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": 'Plan. <tool_call>{"tool": "frame_select", '
                                           '"arguments": {"start_time": 0, "end_time": 2, "nframes": 2}}</tool_call>'}]},
        {"role": "tool", "content": content},
    ]


def test_loads_as_a_real_checkpoint(loaded, tiny_model_dir):
    processor, model = loaded
    assert type(model) is Qwen2_5_VLForConditionalGeneration
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert type(processor.tokenizer).__name__ == "Qwen2Tokenizer"
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessor"
    assert (tiny_model_dir / "model.safetensors").is_file()
    ip = processor.image_processor
    assert (ip.patch_size, ip.merge_size, ip.temporal_patch_size) == (14, 2, 2)
    assert (ip.size.shortest_edge, ip.size.longest_edge) == (MIN_PIXELS, MAX_PIXELS)


def test_every_width_is_at_least_64(loaded):
    _, model = loaded
    text, vision = model.config.text_config, model.config.vision_config
    for width in (text.hidden_size, text.intermediate_size, vision.hidden_size, vision.intermediate_size,
                  vision.out_hidden_size):
        assert width >= 64 and width % 64 == 0
    # Every linear layer's input width is a multiple of 64: what 4-bit block quantisation needs.
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            assert module.in_features % 64 == 0, name


def test_added_tokens_match_the_config(loaded):
    processor, model = loaded
    tok, cfg = processor.tokenizer, model.config
    ids = [tok.convert_tokens_to_ids(t) for t, _ in QWEN_ADDED_TOKENS]
    assert ids == list(range(ids[0], ids[0] + len(QWEN_ADDED_TOKENS)))  # Qwen's order, contiguous
    assert ids[-1] == len(tok) - 1 == cfg.text_config.vocab_size - 1
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>") == processor.image_token_id
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    # Each added token encodes as one id; tool-call tags survive skip_special_tokens, chat tokens do not.
    enc = tok.encode("<|im_start|>assistant\n<tool_call>{}</tool_call><|im_end|>")
    assert enc[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert tok.decode(enc, skip_special_tokens=True) == "assistant\n<tool_call>{}</tool_call>"


def test_chat_template_renders_a_tool_turn_with_images(loaded):
    processor, _ = loaded
    frames = [torch.randint(0, 256, (3, 56, 84), dtype=torch.uint8) for _ in range(2)]
    text = processor.apply_chat_template(_tool_conversation(frames), tokenize=False, add_generation_prompt=True)
    assert text.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nVideo Length: 9")
    assert ("<|im_start|>tool\n<tool_response>Frame 0 at [00:00]: <|vision_start|><|image_pad|><|vision_end|>"
            "\nFrame 1 at [00:01]: <|vision_start|><|image_pad|><|vision_end|>\nIf more") in text
    assert text.endswith("Question: What?</tool_response><|im_end|>\n<|im_start|>assistant\n")
    # Without a system turn the template adds Qwen's default one.
    bare = processor.apply_chat_template(_tool_conversation(frames)[1:2], tokenize=False)
    assert bare.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")


@pytest.mark.parametrize(("height", "width"), [(28, 28), (56, 84), (252, 336), (476, 840)])
def test_protocol_sized_frames_are_not_resized(loaded, height, width):
    processor, _ = loaded
    frame = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    enc = processor.image_processor(images=[frame], return_tensors="pt")
    # grid (t, h, w) in 14-pixel patches: a frame kept at its size has h = H / 14, w = W / 14.
    assert enc["image_grid_thw"].tolist() == [[1, height // 14, width // 14]]


def test_forward_pass_with_images(loaded):
    processor, model = loaded
    frames = [torch.randint(0, 256, (3, 56, 84), dtype=torch.uint8) for _ in range(2)]
    text = processor.apply_chat_template(_tool_conversation(frames), tokenize=False, add_generation_prompt=True)
    enc = processor(text=[text], images=frames, return_tensors="pt")
    n_image = int((enc["input_ids"] == model.config.image_token_id).sum())
    assert n_image == 2 * (56 // 28) * (84 // 28)  # 6 merged tokens per 56x84 frame
    with torch.no_grad():
        out = model(**enc)
    assert out.logits.shape == (1, enc["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(out.logits).all()
    # The images matter: other pixels give other logits.
    enc2 = processor(text=[text], images=[f.flip(-1) for f in frames], return_tensors="pt")
    with torch.no_grad():
        out2 = model(**enc2)
    assert not torch.allclose(out.logits[0, -1], out2.logits[0, -1])


def _digest(folder):
    return hashlib.sha256((folder / "model.safetensors").read_bytes()
                          + (folder / "tokenizer.json").read_bytes()).hexdigest()


def test_same_seed_same_files_other_seed_other_weights(tmp_path, tiny_model_dir):
    a = build_tiny_model(tmp_path / "a", seed=0)
    b = build_tiny_model(tmp_path / "b", seed=1)
    assert _digest(a) == _digest(tiny_model_dir)
    assert _digest(a) != _digest(b)


def test_cache_builds_once(tmp_path):
    first = cached_tiny_model_dir(cache_root=tmp_path, seed=3)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = cached_tiny_model_dir(cache_root=tmp_path, seed=3)
    assert again == first and (again / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary folder left behind


def test_spec_rejects_widths_below_64():
    with pytest.raises(ValueError, match="multiple of 64"):
        TinyModelSpec(vision_hidden_size=32)


def test_replies_depend_on_positions(loaded):
    """Token indices in place of M-RoPE positions change the prediction: the tiny model can
    catch a backend that gets positions wrong (with default init attention is near uniform)."""
    processor, model = loaded
    frames = [torch.randint(0, 256, (3, 84, 112), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))]
    text = processor.apply_chat_template(_tool_conversation(frames), tokenize=False, add_generation_prompt=True)
    enc = processor(text=[text], images=frames, return_tensors="pt")
    n = enc["input_ids"].shape[1]
    with torch.no_grad():
        right = model(**enc).logits[0].argmax(-1)
        naive = model(**enc, position_ids=torch.arange(n).expand(3, 1, n)).logits[0].argmax(-1)
    # Measured: 25% of the greedy predictions change (0% with the default q/k init of 0.02).
    assert (right != naive).float().mean() > 0.1


def test_planner_reads_clock_times_as_whole_tokens_and_the_learner_spells_them():
    from eva_core.tiny_model.processor import build_tokenizer, clock_times
    from eva_core.tiny_model.spec import SPECS

    planner, learner = build_tokenizer(SPECS["planner"]), build_tokenizer(SPECS["learner"])
    assert clock_times(3) == ["00:00", "00:01", "00:02"] and clock_times(600)[-1] == "09:59"
    question = "A shape appears briefly in the video, between 01:20 and 01:40. Frame 3 at [02:28]: "
    pieces = [planner.decode([i]) for i in planner(question)["input_ids"]]
    assert {"01:20", "01:40", "02:28"} <= set(pieces)  # one token each, wherever they stand
    assert planner.decode(planner(question)["input_ids"]) == question
    ids = planner.convert_tokens_to_ids(clock_times(600))
    assert ids == list(range(ids[0], ids[0] + 600)) and ids[-1] == len(planner) - 1  # after Qwen's added tokens
    assert [planner.decode([i]) for i in planner('"start_time": 88.0')["input_ids"]][-4:] == ["8", "8", ".", "0"]
    assert "01:20" not in [learner.decode([i]) for i in learner(question)["input_ids"]]  # the learner: digits one by one, as Qwen
