"""Token-in, token-out prompts: each turn's ids are the episode's previous ids plus new ones.

The first turn of an episode is rendered with the chat template and encoded with its images
by the processor. Every later turn is encoded as a continuation (`EpisodeTokens`): the ids fed
and sampled before, unchanged, then the ids of what the template writes after the sampled
reply: its end-of-turn token when the reply did not sample one (a reply cut by the token
limit), the newline after it, the new tool or user turn with its images, and the next
generation prompt. The sampled text is never rendered and tokenized again, where BPE could
split it differently than sampled (6 of 6 tiny-model episodes did, measured); the text of the
reply in `messages` is not read either, so a caller that edits it (`forced.AppendToolCall`)
changes what the loop parses but not what the model reads.

Only the new turn's images go through the image processor; earlier images' pixel values are
computed again only when a turn must be prefilled from before them (a KV cache dropped).

M-RoPE positions (Qwen2-VL family) are computed over the whole sequence by the model's own
`get_rope_index`, found through any wrapper (peft, FSDP2) by `find_rope_index`; a model whose
config declares M-RoPE but exposes no `get_rope_index` is an error, not a silent fallback to
1-D positions (which give logits off by up to 0.70 under peft, measured on the tiny model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from eva_core.backends.prefix_cache import ImageSpan, image_key, image_spans
from eva_core.policy import Message


def message_images(messages: Sequence[Message]) -> list[Any]:
    """The images of a conversation in the order the chat template places their tokens.

    A part is an image when Qwen's template says so: type "image", or an "image" or
    "image_url" key. Tensors, arrays and PIL images are taken as they are; a path or URL
    string (an "image" string, an "image_url" {"url": ...} or string) is loaded with
    transformers' `load_image`.
    """
    from transformers.image_utils import load_image

    images = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str) or content is None:
            continue
        for part in content:
            if part.get("type") == "image" or "image" in part:
                image = part["image"]
            elif "image_url" in part:
                image = part["image_url"]
                image = image["url"] if isinstance(image, dict) else image
            else:
                continue
            images.append(load_image(image) if isinstance(image, str) else image)
    return images


def uses_mrope(config: Any) -> bool:
    """Whether a model config (or its text config) declares M-RoPE (an "mrope_section")."""
    for cfg in (config, getattr(config, "text_config", None)):
        for name in ("rope_parameters", "rope_scaling"):
            params = getattr(cfg, name, None)
            if isinstance(params, dict) and "mrope_section" in params:
                return True
    return False


def find_rope_index(model: torch.nn.Module) -> Callable[..., tuple[torch.Tensor, torch.Tensor]] | None:
    """The `get_rope_index` of the first submodule whose class defines one, through any wrapper.

    Returns:
        The bound method, or None for a model without M-RoPE.

    Raises:
        ValueError: the config declares M-RoPE but no submodule defines `get_rope_index`.
    """
    for module in model.modules():
        if callable(getattr(type(module), "get_rope_index", None)):
            return module.get_rope_index
    if uses_mrope(getattr(model, "config", None)):
        raise ValueError(f"{type(model).__name__} uses M-RoPE but no submodule defines get_rope_index: "
                         "image positions cannot be computed")
    return None


@dataclass
class EpisodeTokens:
    """What a backend keeps of an episode's tokens between turns.

    Attributes:
        ids: every id fed and sampled so far (the last turn's prompt, then its reply).
        messages: how many messages they cover (the last one is the sampled reply).
        keys: fingerprints of the images among them, in order.
        grids: (t, h, w) patch grid of each image.
        last_token: the reply's last sampled id.
    """

    ids: list[int]
    messages: int
    keys: list[str]
    grids: list[list[int]]
    last_token: int


@dataclass
class EncodedPrompt:
    """One request, encoded.

    Attributes:
        ids: long [T], the whole context the reply continues.
        new_from: ids[new_from:] are this turn's prompt ids (0 on a first turn).
        spans: its images' placeholder runs.
        grids: long [I, 3] patch grids of all I images, or None.
        positions: long [A, T], A = 3 for M-RoPE models, 1 otherwise.
        images: the I images, in order.
        pixel_values: the processor's rows of images[pixels_from:], or None.
        pixels_from: index of the first image `pixel_values` holds.
        visual_tokens: placeholder tokens of all images.
    """

    ids: torch.Tensor
    new_from: int
    spans: list[ImageSpan]
    grids: torch.Tensor | None
    positions: torch.Tensor
    images: list[Any]
    pixel_values: torch.Tensor | None
    pixels_from: int
    visual_tokens: int


def continuation_text(processor, messages: Sequence[Message], before: EpisodeTokens, end_tokens: Sequence[str]) -> str | None:
    """The text the template writes after the sampled reply, up to the next generation prompt.

    Returns None when `messages` do not extend the conversation `before` covers (the caller
    then encodes them whole).

    Raises:
        ValueError: the template closes the assistant turn with none of `end_tokens`.
    """
    n = before.messages
    if len(messages) <= n or messages[n - 1].get("role") != "assistant":
        return None
    upto = processor.apply_chat_template(list(messages[:n]), tokenize=False, add_generation_prompt=False)
    full = processor.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    if not full.startswith(upto):
        return None
    cut, token = max((upto.rfind(t), t) for t in end_tokens)
    if cut < 0:
        raise ValueError(f"the chat template closes an assistant turn with none of {list(end_tokens)}")
    sampled_close = processor.tokenizer.convert_ids_to_tokens(before.last_token) == token
    return upto[cut + len(token):] + full[len(upto):] if sampled_close else upto[cut:] + full[len(upto):]


def encode_prompt(processor, messages: Sequence[Message], before: EpisodeTokens | None, *, image_token_id: int | None,
                  rope_index: Callable | None, end_tokens: Sequence[str]) -> EncodedPrompt:
    """Encode a request: as a continuation of `before` when it extends it, else whole.

    Args:
        processor: chat template, tokenizer and image processor.
        messages: the conversation, ending with a user or tool turn.
        before: the episode's tokens after its previous turn, or None.
        image_token_id: the image placeholder id (needed when there are images).
        rope_index: the model's `get_rope_index` (`find_rope_index`), or None.
        end_tokens: texts of the tokens that end a reply.
    """
    suffix = None if before is None else continuation_text(processor, messages, before, end_tokens)
    if suffix is None:
        before = None
        new_messages = list(messages)
        text = processor.apply_chat_template(new_messages, tokenize=False, add_generation_prompt=True)
    else:
        new_messages = list(messages[before.messages:])
        text = suffix
    new_images = message_images(new_messages)
    inputs = processor(text=[text], images=new_images or None, return_tensors="pt")
    old_ids = before.ids if before is not None else []
    ids = torch.cat([torch.tensor(old_ids, dtype=torch.long), inputs["input_ids"][0]])
    old_grids = before.grids if before is not None else []
    grid_rows = old_grids + (inputs["image_grid_thw"].tolist() if new_images else [])
    grids = torch.tensor(grid_rows, dtype=torch.long) if grid_rows else None
    old_keys = before.keys if before is not None else []
    images = message_images(messages) if old_keys else new_images
    spans: list[ImageSpan] = []
    if images:
        if image_token_id is None:
            raise ValueError("images given but neither processor nor config names an image token")
        spans = image_spans(ids.tolist(), image_token_id, old_keys + [image_key(im) for im in new_images])
    n = ids.numel()
    if rope_index is not None and images:
        positions, _ = rope_index(ids[None], mm_token_type_ids=(ids == image_token_id).int()[None],
                                  image_grid_thw=grids, attention_mask=torch.ones(1, n, dtype=torch.long))
        positions = positions[:, 0]
    elif rope_index is not None:
        positions = torch.arange(n).expand(3, n)
    else:
        positions = torch.arange(n)[None]
    return EncodedPrompt(ids=ids, new_from=len(old_ids), spans=spans, grids=grids, positions=positions,
                         images=images, pixel_values=inputs.get("pixel_values") if new_images else None,
                         pixels_from=len(old_keys), visual_tokens=sum(s.end - s.start for s in spans))


def vision_inputs(processor, prompt: EncodedPrompt, first: int) -> dict[str, torch.Tensor]:
    """pixel_values and image_grid_thw of the images from index `first` on ({} when none).

    Rows the turn's processor call computed are sliced (Qwen's layout: t * h * w rows per
    image); earlier images are processed again.
    """
    if first >= len(prompt.spans):
        return {}
    grids = prompt.grids[first:]
    if first >= prompt.pixels_from:
        offset = int(prompt.grids[prompt.pixels_from:first].prod(dim=-1).sum())
        return {"pixel_values": prompt.pixel_values[offset:], "image_grid_thw": grids}
    out = processor.image_processor(images=prompt.images[first:], return_tensors="pt")
    if not torch.equal(out["image_grid_thw"], grids):
        raise ValueError("the image processor gives other grids than when the images were first encoded")
    return {"pixel_values": out["pixel_values"], "image_grid_thw": grids}
