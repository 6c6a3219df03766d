"""eva_core.vision_attention: attention within segments, batched by segment length (issue 15)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from eva_core.vision_attention import attention_by_length, use_grouped_vision_attention

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _per_segment(q, k, v, cu, scale):
    """The per-window loop transformers runs under sdpa."""
    outs = []
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        qs, ks, vs = (t[a:b].transpose(0, 1)[None] for t in (q, k, v))
        outs.append(F.scaled_dot_product_attention(qs, ks, vs, scale=scale)[0].transpose(0, 1))
    return torch.cat(outs)


def test_each_position_averages_the_values_of_its_own_segment_only():
    # Segments [0, 3) and [3, 5): values 1.0 in the first and 2.0 in the second. Softmax weights
    # sum to 1 within a segment, so whatever the queries and keys, every output of the first
    # segment is exactly 1.0 and of the second 2.0; any leak across segments would mix them.
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(5, 2, 4, generator=g), torch.randn(5, 2, 4, generator=g)
    v = torch.tensor([1.0] * 3 + [2.0] * 2)[:, None, None].expand(5, 2, 4)
    out = attention_by_length(q, k, v, torch.tensor([0, 3, 5]), scale=0.5)
    torch.testing.assert_close(out, v, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cu", [[0, 4, 8, 12], [0, 4, 7, 7, 11, 16, 18, 22], [0, 9]])
def test_equals_the_per_segment_loop(cu):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(cu[-1], 3, 8, generator=g) for _ in range(3))
    cu = torch.tensor(cu)
    torch.testing.assert_close(attention_by_length(q, k, v, cu, scale=8**-0.5), _per_segment(q, k, v, cu, 8**-0.5),
                               rtol=1e-5, atol=1e-6)


def test_bad_boundaries_are_refused():
    q = torch.zeros(6, 1, 2)
    with pytest.raises(ValueError, match="rise from 0 to 6"):
        attention_by_length(q, q, q, torch.tensor([0, 4, 3, 6]), scale=1.0)
    with pytest.raises(ValueError, match="rise from 0 to 6"):
        attention_by_length(q, q, q, torch.tensor([0, 5]), scale=1.0)
    with pytest.raises(ValueError, match=r"\[S, H, D\]"):
        attention_by_length(q[0], q[0], q[0], torch.tensor([0, 1]), scale=1.0)


def test_tiny_model_gives_the_same_logits_with_fewer_attention_calls(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32,
                                                        attn_implementation="sdpa").eval()
    # Two frames of 224x336: 16x24 patches, 8x12 merged tokens; windows of 4x4 merged tokens (112
    # pixels) -> 2x3 windows of 64 patches each. A 196x308 frame: 7x11 merged tokens -> 2x3 windows
    # of 4 or 3 merged tokens a side: 64, 48 (4x3), 48 (3x4), 64, 48, 36 patches.
    g = torch.Generator().manual_seed(0)
    frames = [torch.randint(0, 256, (3, 224, 336), generator=g, dtype=torch.uint8) for _ in range(2)]
    frames.append(torch.randint(0, 256, (3, 196, 308), generator=g, dtype=torch.uint8))
    content = [{"type": "image", "image": f} for f in frames] + [{"type": "text", "text": "what is shown?"}]
    inputs = processor.apply_chat_template([{"role": "user", "content": content}], tokenize=True,
                                           return_dict=True, return_tensors="pt")
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(1) or sdpa(*a, **kw))

    def forward():
        calls.clear()
        with torch.no_grad():
            logits = model(**inputs).logits
        return logits, len(calls)

    before, loop_calls = forward()
    assert use_grouped_vision_attention(model) == 2  # the tiny tower's 2 blocks
    after, grouped_calls = forward()
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    # The loop: block 0 one call per window (6 + 6 + 6), block 1 (full attention) one per image (3),
    # 2 decoder layers -> 18 + 3 + 2 = 23. Grouped: block 0 one per window length (64, 48, 36 -> 3),
    # block 1 one per image size (2), decoder 2 -> 7.
    assert (loop_calls, grouped_calls) == (23, 7)
