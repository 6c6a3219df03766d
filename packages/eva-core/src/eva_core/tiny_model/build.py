"""The tiny checkpoint itself: a `Qwen2_5_VLConfig` of the real architecture at the tiny sizes,
seeded random weights, a generation config, written with `save_pretrained`.

One departure, for serving and harmless in-process: `generation_config.suppress_tokens` lists
the special tokens other than the two end tokens (random weights would otherwise write image
placeholders that one backend's decode drops and another's keeps).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from eva_core.tiny_model.processor import build_processor
from eva_core.tiny_model.qwen import END_TOKENS, QWEN_ADDED_TOKENS
from eva_core.tiny_model.spec import TinyModelSpec

TINY_MODEL_VERSION = "1"
"""Part of the cache key (with a digest of this package's source): bump it to invalidate every cached copy."""


def build_config(tokenizer, spec: TinyModelSpec | None = None):
    """A `Qwen2_5_VLConfig` of the real architecture at the tiny sizes, token ids from `tokenizer`."""
    from transformers import Qwen2_5_VLConfig

    spec = spec or TinyModelSpec()
    ids = {content: tokenizer.convert_tokens_to_ids(content) for content, _ in QWEN_ADDED_TOKENS}
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "use_sliding_window": False,
        "max_window_layers": spec.num_hidden_layers,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": spec.mrope_section},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision_config = {
        "depth": spec.vision_depth,
        "hidden_size": spec.vision_hidden_size,
        "intermediate_size": spec.vision_intermediate_size,
        "num_heads": spec.vision_heads,
        "hidden_act": "silu",
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "tokens_per_second": 2,
        "window_size": 112,
        "out_hidden_size": spec.hidden_size,
        "fullatt_block_indexes": [spec.vision_depth - 1],
    }
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def build_tiny_model(out_dir: str | os.PathLike, *, seed: int = 0, spec: TinyModelSpec | None = None) -> Path:
    """Build the tiny Qwen2.5-VL checkpoint into `out_dir` (created; existing files overwritten).

    Args:
        out_dir: destination folder.
        seed: seeds both the tokenizer's training text and the weights; the same seed gives
            the same files.
        spec: sizes; `TinyModelSpec()` by default.

    Returns:
        The folder, loadable with `AutoProcessor.from_pretrained` and
        `AutoModelForImageTextToText.from_pretrained`.
    """
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    spec = spec or TinyModelSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    processor = build_processor(spec, seed=seed)
    tokenizer = processor.tokenizer
    config = build_config(tokenizer, spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
        # At the default init (std 0.02) random attention is nearly uniform, so replies would not
        # depend on token positions and a test of M-RoPE position handling could not fail
        # (measured: positions replaced by token indices gave the same greedy reply). Sharper
        # query/key projections make attention, and so the replies, depend on positions.
        with torch.no_grad():
            for layer in model.model.language_model.layers if spec.qk_init_std is not None else ():
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                    proj.weight.normal_(0.0, spec.qk_init_std)
    end_ids = [tokenizer.convert_tokens_to_ids(t) for t in END_TOKENS]
    # Random weights would write image placeholders and other chat markers that a trained model
    # never writes; a skip_special_tokens decode drops them but a server's raw decode keeps them,
    # so two backends would return different text. Suppress every special token but the ends.
    suppress = [tokenizer.convert_tokens_to_ids(t) for t, special in QWEN_ADDED_TOKENS
                if special and t not in END_TOKENS]
    # Greedy by default (docs/protocol.md, "Conversation"); eos as Qwen2.5-VL: <|im_end|>, <|endoftext|>.
    model.generation_config = GenerationConfig(
        bos_token_id=end_ids[1], eos_token_id=end_ids, pad_token_id=end_ids[1], do_sample=False,
        suppress_tokens=suppress,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "README.md").write_text(
        "# tiny Qwen2.5-VL (random weights)\n\n"
        f"Built offline by `eva_core.tiny_model.build_tiny_model(seed={seed})`, version {TINY_MODEL_VERSION}.\n"
        "Real architecture, random weights, a BPE tokenizer trained locally: for tests only.\n"
    )
    return out
