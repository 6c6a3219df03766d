"""What the tiny checkpoint copies from Qwen2.5-VL-7B-Instruct: the added tokens, the
pre-tokenizer split and the chat template, so that it renders, tokenizes and loads exactly as
the real checkpoint does.

One addition of ours, for serving: `RAW_RESPONSE_TEMPLATE`, the tokenizer's pass-through
`response_template`, so that `transformers serve` returns the raw reply instead of failing on
EVA's tool-call JSON. In-process it changes nothing.
"""

from __future__ import annotations

# Qwen2.5-VL's added tokens, in Qwen's order (ids 151643..151664 there), with Qwen's `special`
# flag: tool-call and FIM tokens are not special, so they survive skip_special_tokens.
QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)

END_TOKENS = ("<|im_end|>", "<|endoftext|>")
"""Qwen2.5-VL's end tokens: eos `<|im_end|>`, and `<|endoftext|>`, also its bos and pad."""

# Qwen2's pre-tokenizer split (transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX).
QWEN_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2.5-VL-7B-Instruct's chat_template.json, verbatim. It has no tool-specific branch: a `tool`
# turn renders as `<|im_start|>tool\n...<|im_end|>` with its images as
# `<|vision_start|><|image_pad|><|vision_end|>`, which is why the protocol's tool turn carries its
# own `<tool_response>` tags in its text (docs/protocol.md, "Conversation").
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# `transformers serve` parses replies with the tokenizer's `response_template`, else with a
# built-in Qwen one that lifts `<tool_call>` blocks into OpenAI `tool_calls`: that one needs a
# `name` key, so EVA's `{"tool": "frame_select", ...}` calls (and any malformed block) end in
# HTTP 500, and it strips the text. This template hands back the whole reply, unstripped, up to
# the end token, so the server returns what the model wrote (vLLM does the same by default).
# To serve a real EVA checkpoint with `transformers serve`, add it to its tokenizer_config.json.
RAW_RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "content": {
            "close_pattern": r"<\|im_end\|>|<\|endoftext\|>",
            "content": "text",
            "content_args": {"strip": False},
        },
    },
}
