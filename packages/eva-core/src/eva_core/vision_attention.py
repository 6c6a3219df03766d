"""Qwen2.5-VL's vision attention as a few batched calls instead of one call per window.

The vision tower attends within windows of 8x8 patches (112 pixels) in 28 of its 32 blocks
and within each image in the other 4. Under `attn_implementation="sdpa"`, transformers
(5.23) runs one `scaled_dot_product_attention` call per window: a 784x448 frame has 28
windows, so 16 frames make 448 calls in each of the 28 window blocks, about 12,600 small
kernels per forward. On an H200 (measured, docs/benchmarks.md) that made the tower's forward over 16 frames cost
0.8 s of a 1.9 s 7B LoRA step whose language-model part, alone, runs at 46 % utilisation.

`attention_by_length` computes the same block-diagonal attention (each patch attends to the
patches of its own segment) with one call per distinct segment length: segments of equal
length are gathered into one batch [G, heads, n, head_dim]. Frames whose sides are multiples
of 112 pixels have only full windows, so a block makes one call; other sizes add one call per
distinct edge-window length. The result equals the per-window loop up to floating-point
summation order.

`use_grouped_vision_attention(model)` swaps that into every vision attention module of a
loaded model. Flash-attention implementations already take the segments in one varlen call
and are left alone.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_QWEN_VISION_ATTENTION = ("Qwen2_5_VLVisionAttention",)


def attention_by_length(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, *, scale: float) -> Tensor:
    """Attention within segments, one `scaled_dot_product_attention` call per distinct length.

        out_i = sum_{j in seg(i)} softmax_j(scale * q_i . k_j) v_j

    Args:
        q, k, v: [S, H, D] the queries, keys and values of all segments, back to back.
        cu_seqlens: [N + 1] int, segment boundaries (0, ..., S); empty segments are allowed.
        scale: the softmax scale (1 / sqrt(D) usually).

    Returns:
        [S, H, D], in the order of `q`.
    """
    if q.ndim != 3 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must all be [S, H, D], got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    bounds = cu_seqlens.tolist()
    if bounds[0] != 0 or bounds[-1] != q.shape[0] or any(b < a for a, b in zip(bounds[:-1], bounds[1:], strict=True)):
        raise ValueError(f"cu_seqlens must rise from 0 to {q.shape[0]}, got {bounds[:4]}...{bounds[-2:]}")
    starts: dict[int, list[int]] = {}
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if b > a:
            starts.setdefault(b - a, []).append(a)
    s, h, d = q.shape
    outputs, order = [], []
    for n, first in starts.items():
        rows = (torch.tensor(first, device=q.device)[:, None] + torch.arange(n, device=q.device)).reshape(-1)
        qg, kg, vg = (t.index_select(0, rows).view(len(first), n, h, d).transpose(1, 2) for t in (q, k, v))
        outputs.append(F.scaled_dot_product_attention(qg, kg, vg, scale=scale).transpose(1, 2).reshape(-1, h, d))
        order.append(rows)
    if len(outputs) == 1 and _is_range(order[0]):  # one length, segments back to back: already in order
        return outputs[0]
    inverse = torch.empty(s, dtype=torch.long, device=q.device)
    inverse[torch.cat(order)] = torch.arange(s, device=q.device)
    return torch.cat(outputs).index_select(0, inverse)


def _is_range(rows: Tensor) -> bool:
    return bool(rows.numel() == 0 or (rows == torch.arange(rows.numel(), device=rows.device)).all())


def _grouped_forward(self, hidden_states: Tensor, cu_seqlens: Tensor, position_embeddings=None, max_seqlen=None,
                     **kwargs) -> Tensor:
    """Qwen2.5-VL's vision attention forward (transformers 5.23) with `attention_by_length` inside."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    seq_length = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    out = attention_by_length(q, k, v, cu_seqlens, scale=self.scaling)
    return self.proj(out.reshape(seq_length, -1))


def use_grouped_vision_attention(model: nn.Module) -> int:
    """Route every Qwen2.5-VL vision attention module of `model` (under sdpa) through `attention_by_length`.

    Returns:
        The number of modules changed (0 for a model without such a tower, or whose vision
        attention is not sdpa: flash attention already runs one varlen call, eager is left as asked).
    """
    changed = 0
    for module in model.modules():
        if type(module).__name__ not in _QWEN_VISION_ATTENTION:
            continue
        if getattr(module.config, "_attn_implementation", None) != "sdpa":
            continue  # flash implementations already take all segments in one varlen call
        module.forward = types.MethodType(_grouped_forward, module)
        changed += 1
    return changed
