"""The published sizes of Qwen2.5-VL-3B/7B-Instruct, to build their shape without their checkpoints.

The shapes are read off the models' `config.json`. They let a recipe's model be sized and its
sharding planned on the meta device (tests/test_train_configs.py), and let
`benchmarks/gpu_train.py` time training at the real shape with random weights on a machine
that holds no checkpoint and reaches no model hub. Random weights compute exactly as much as
trained ones; only what the model says is meaningless.
"""

from __future__ import annotations

from typing import Any

# The vision tower (about 0.67B parameters) is the same in both; only its output width differs.
_VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "patch_size": 14,
           "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
           "fullatt_block_indexes": [7, 15, 23, 31], "in_chans": 3, "tokens_per_second": 2, "hidden_act": "silu"}
_TEXT_COMMON = {"max_position_embeddings": 128000, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
                "hidden_act": "silu", "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}

QWEN2_5_VL_TEXT: dict[str, dict[str, Any]] = {
    "3b": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
           "num_attention_heads": 16, "num_key_value_heads": 2, "tie_word_embeddings": True, **_TEXT_COMMON},
    "7b": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
           "num_attention_heads": 28, "num_key_value_heads": 4, "tie_word_embeddings": False, **_TEXT_COMMON},
}
"""`text_config` of Qwen2.5-VL-{3B,7B}-Instruct, by size."""

QWEN2_5_VL_VISION: dict[str, dict[str, Any]] = {
    size: {**_VISION, "out_hidden_size": text["hidden_size"]} for size, text in QWEN2_5_VL_TEXT.items()
}
"""`vision_config` of Qwen2.5-VL-{3B,7B}-Instruct, by size."""

# Qwen2.5-VL's own token ids; a model built for another tokenizer passes that tokenizer's.
QWEN_TOKEN_IDS = {"image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
                  "vision_end_token_id": 151653}


def qwen2_5_vl_config(size: str, *, token_ids: dict[str, int] | None = None):
    """The `Qwen2_5_VLConfig` of Qwen2.5-VL-{size}-Instruct.

    Args:
        size: "3b" or "7b".
        token_ids: image, video, vision start and end token ids (keys of `QWEN_TOKEN_IDS`),
            plus optionally bos/eos/pad ids for the text model; Qwen's own by default.
    """
    from transformers import Qwen2_5_VLConfig

    if size not in QWEN2_5_VL_TEXT:
        raise ValueError(f"size must be one of {sorted(QWEN2_5_VL_TEXT)}, got {size!r}")
    ids = {**QWEN_TOKEN_IDS, **(token_ids or {})}
    text = dict(QWEN2_5_VL_TEXT[size])
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key in ids:
            text[key] = ids.pop(key)
    return Qwen2_5_VLConfig(text_config=text, vision_config=QWEN2_5_VL_VISION[size],
                            tie_word_embeddings=text["tie_word_embeddings"], **ids)
