"""A conversation rendered by the model's own chat template into token ids, a trained-token mask and images.

`encode_conversation(processor, messages)` turns one multi-turn, multimodal conversation (the
Hugging Face chat format of `eva_core.policy`: image parts hold uint8 [3, H, W] tensors
already at the size the model sees) into what the model reads in training. It produces the
same token ids as `processor(text=apply_chat_template(messages), images=...)`, i.e. as
inference renders the same turns, and in addition:

- `trained`: which tokens carry loss. A trained turn (by default every assistant turn) trains
  its content and the end-of-turn token that stops generation (`<|im_end|>` for Qwen), not
  the header `<|im_start|>assistant\\n` (the generation prompt writes it) nor the newline the
  template adds after the end token (generation stops before it). Spans are found by rendering
  prefixes of the conversation: turn k's text is render(turns[:k+1]) minus
  render(turns[:k], add_generation_prompt=True), which holds for any template that renders a
  conversation turn by turn (checked: `TemplateError` otherwise).
- `trained_from=(turn, char)`: the first trained turn is trained from its character `char` on
  (a KTO undesirable's credit, `eva_data.records.records.Credit`); a token that the character
  falls inside is trained, so the first differing digit or word carries the loss.
- `prompt_length`: the tokens before the first assistant turn, whichever turns are trained
  (KTO's mismatched pairs swap this prompt: `eva_train.encoding.kl_pairs`).
- `image_spans`: the token range of each image, from `<|vision_start|>` to `<|vision_end|>`
  inclusive, so that truncation never cuts an image in half (`truncate`).

With `with_pixels=False` the image grids come from the frame sizes (Qwen2-VL's `smart_resize`,
as the image processor computes them) and the uint8 frames are kept instead of the processor's
float patches, which are 8 times larger (3 float32 channels, each frame repeated over Qwen's
2-frame temporal patch); `pixel_values_for` runs the image processor later, on a batch. The
training stream holds a whole length-grouping window this way.

Images are not resized: the protocol's frames are multiples of 28 and the tiny model's
processor keeps such sizes (see `eva_core.tiny_model`); a real Qwen2.5-VL processor applies
its own min/max pixel bounds exactly as at inference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from eva_core.protocol import turn_text
from torch import Tensor


class TemplateError(ValueError):
    """The chat template or the conversation cannot be rendered turn by turn."""


@dataclass
class EncodedConversation:
    """One conversation as the model reads it.

    Attributes:
        input_ids: [T] long, image placeholders expanded to one token per merged patch.
        trained: [T] bool, True where the token is a training target (predicted from the
            tokens before it; position 0 is never trained).
        mm_token_type_ids: [T] int, 0 for text, 1 for image tokens (what Qwen2.5-VL's M-RoPE needs).
        pixel_values: [P, D] float patches of all images in order (P = sum of t * h * w).
        image_grid_thw: [I, 3] long (t, h, w) patch grid of each image.
        image_spans: I (start, end) token ranges, end exclusive, from the vision-start token to
            the vision-end token inclusive.
        truncated: whether `truncate` dropped tokens.
        prompt_length: tokens before the first assistant turn (all of them when there is none);
            None: before the first trained token.
        images: the I frames, uint8 [3, H, W], when `pixel_values` is not computed yet.
        sample_id: the source sample's id (`ChatSample.sample_id`).
        meta: the source sample's metadata, carried to the batch (a KTO label lives here).
    """

    input_ids: Tensor
    trained: Tensor
    mm_token_type_ids: Tensor
    pixel_values: Tensor | None
    image_grid_thw: Tensor | None
    image_spans: list[tuple[int, int]] = field(default_factory=list)
    truncated: bool = False
    prompt_length: int | None = None
    images: list[Tensor] | None = None
    sample_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = self.input_ids.shape[0]
        if self.input_ids.ndim != 1 or self.trained.shape != (t,) or self.mm_token_type_ids.shape != (t,):
            raise ValueError("input_ids, trained and mm_token_type_ids must be [T] of one length")
        n_images = 0 if self.image_grid_thw is None else self.image_grid_thw.shape[0]
        if n_images != len(self.image_spans):
            raise ValueError(f"{n_images} image grids but {len(self.image_spans)} image spans")
        if n_images and self.pixel_values is None and (self.images is None or len(self.images) != n_images):
            raise ValueError("an encoded conversation needs pixel_values or one frame per image grid")
        if n_images and self.pixel_values is not None and \
                self.pixel_values.shape[0] != int(self.image_grid_thw.prod(dim=1).sum()):
            raise ValueError("pixel_values rows do not match the image grids")

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_trained(self) -> int:
        return int(self.trained.sum())


def _render(processor, messages: Sequence[dict], *, generation_prompt: bool) -> str:
    if not messages:
        return ""
    return processor.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


def _images(messages: Sequence[dict]) -> list[Tensor]:
    images = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise TemplateError(f"turn {i} is not a {{'role', 'content'}} dict")
        content = message["content"]
        if isinstance(content, str):
            continue
        for part in content:
            if part.get("type") == "image":
                image = part.get("image")
                if not isinstance(image, Tensor) or image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
                    raise TemplateError(f"turn {i}: an image part must hold a uint8 [3, H, W] tensor")
                images.append(image)
            elif part.get("type") == "video":
                raise TemplateError(f"turn {i}: video parts are not supported; the protocol shows frames as images")
    return images


def trained_char_spans(processor, messages: Sequence[dict], trained_turns: Sequence[bool]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans of the trained turns' tokens.

    Args:
        processor: a Hugging Face processor (or tokenizer) with a chat template.
        messages: the conversation.
        trained_turns: one flag per turn; a trained turn must be an assistant turn.

    Returns:
        (text, spans) with spans as (start, end) character offsets into text, end exclusive.
    """
    if len(trained_turns) != len(messages):
        raise TemplateError(f"{len(trained_turns)} trained flags for {len(messages)} turns")
    text = _render(processor, messages, generation_prompt=False)
    eos = getattr(getattr(processor, "tokenizer", processor), "eos_token", None)
    spans = []
    for k, train in enumerate(trained_turns):
        if not train:
            continue
        if messages[k]["role"] != "assistant":
            raise TemplateError(f"turn {k} is a {messages[k]['role']!r} turn; only assistant turns can be trained")
        prompt = _render(processor, messages[:k], generation_prompt=True)
        upto = _render(processor, messages[: k + 1], generation_prompt=False)
        if not (upto.startswith(prompt) and text.startswith(upto)):
            raise TemplateError(f"the chat template does not render turn {k} as an extension of the turns before it")
        start, end = len(prompt), len(upto)
        if eos and (cut := text.rfind(eos, start, end)) >= 0:
            end = cut + len(eos)
        spans.append((start, end))
    return text, spans


def image_grids(image_processor, images: Sequence[Tensor]) -> Tensor:
    """[I, 3] (t, h, w) patch grids the Qwen2-VL image processor gives these frames, from their sizes.

    Qwen2-VL's `smart_resize` (sides to multiples of patch x merge within [min, max] pixels) then
    one temporal patch per image: what `image_processor(images)["image_grid_thw"]` returns.
    """
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    patch, merge = image_processor.patch_size, image_processor.merge_size
    size = image_processor.size
    rows = []
    for image in images:
        h, w = smart_resize(int(image.shape[-2]), int(image.shape[-1]), patch * merge,
                            min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"])
        rows.append([1, h // patch, w // patch])
    return torch.tensor(rows, dtype=torch.long)


def pixel_values_for(image_processor, images: Sequence[Tensor], grids: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The image processor's (pixel_values [P, D], image_grid_thw [I, 3]) for frames.

    Raises:
        ValueError: the processor's grids differ from `grids` (precomputed from the sizes).
    """
    out = image_processor(images=list(images), return_tensors="pt")
    if grids is not None and not torch.equal(out["image_grid_thw"], grids):
        raise ValueError("the image processor's grids differ from the ones computed from the frame sizes")
    return out["pixel_values"], out["image_grid_thw"]


def encode_conversation(processor, messages: Sequence[dict[str, Any]], trained_turns: Sequence[bool] | None = None,
                        *, with_pixels: bool = True, trained_from: tuple[int, int] | None = None) -> EncodedConversation:
    """Render, tokenize and mask one conversation.

    Args:
        processor: the model's processor (tokenizer with chat template, image processor, merge size).
        messages: the conversation; images as uint8 [3, H, W] tensors in the turns' content.
        trained_turns: one flag per turn; default every assistant turn.
        with_pixels: run the image processor now; False keeps the frames for `pixel_values_for`.
        trained_from: (turn, char): train the first trained turn from its character `char` on.

    Returns:
        The encoded conversation (see `EncodedConversation`).
    """
    if trained_turns is None:
        trained_turns = [m.get("role") == "assistant" for m in messages]
    images = _images(messages)
    text, spans = trained_char_spans(processor, messages, trained_turns)
    assistant = [k for k, m in enumerate(messages) if m.get("role") == "assistant"]
    prompt_end = len(_render(processor, messages[:assistant[0]], generation_prompt=True)) if assistant else len(text)
    credit_start = None  # the character training starts at, inside the first trained span
    if trained_from is not None:
        turn, char = trained_from
        if not spans or True not in trained_turns or trained_turns.index(True) != turn:
            raise TemplateError(f"trained_from {trained_from}: turn {turn} is not the first trained turn")
        content = turn_text(messages[turn])
        if not 0 <= char < len(content) or not text.startswith(content[:char + 1], spans[0][0]):
            raise TemplateError(f"trained_from {trained_from}: character {char} is not in turn {turn}'s rendered text")
        credit_start = spans[0][0] + char
        spans[0] = (credit_start, spans[0][1])
    tokenizer = processor.tokenizer
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    image_token = tokenizer.convert_tokens_to_ids(processor.image_token)
    start_token = tokenizer.convert_tokens_to_ids("<|vision_start|>")
    end_token = tokenizer.convert_tokens_to_ids("<|vision_end|>")

    if images:
        if with_pixels:
            pixel_values, grid = pixel_values_for(processor.image_processor, images)
        else:
            pixel_values, grid = None, image_grids(processor.image_processor, images)
        merge = processor.image_processor.merge_size
        per_image = (grid.prod(dim=1) // (merge * merge)).tolist()
    else:
        pixel_values, grid, per_image = None, None, []

    out_ids: list[int] = []
    out_trained: list[bool] = []
    out_type: list[int] = []
    image_spans: list[tuple[int, int]] = []
    span_starts: list[int] = []
    n_image = 0
    span_index = 0
    prompt_length = None
    for token, (a, b) in zip(ids, offsets, strict=True):
        if prompt_length is None and b > prompt_end:
            prompt_length = len(out_ids)
        if token == image_token:
            if n_image >= len(per_image):
                raise TemplateError(f"the template wrote more image placeholders than the {len(per_image)} images")
            count = per_image[n_image]
            out_ids += [token] * count
            out_trained += [False] * count
            out_type += [1] * count
            n_image += 1
            continue
        while span_index < len(spans) and spans[span_index][1] <= a:
            span_index += 1
        inside = span_index < len(spans) and spans[span_index][0] <= a and b <= spans[span_index][1]
        if span_index == 0 and credit_start is not None and a < credit_start < b:
            inside = True  # the token the credited character falls inside
        if token == start_token:
            span_starts.append(len(out_ids))
        elif token == end_token and span_starts:
            image_spans.append((span_starts.pop(), len(out_ids) + 1))
        out_ids.append(token)
        out_trained.append(inside)
        out_type.append(0)
    if n_image != len(per_image):
        raise TemplateError(f"{len(per_image)} images but the template wrote {n_image} placeholders")
    if len(image_spans) != n_image:
        raise TemplateError("every image placeholder must sit between <|vision_start|> and <|vision_end|>")
    trained = torch.tensor(out_trained, dtype=torch.bool)
    if trained.numel():
        trained[0] = False  # nothing predicts the first token
    return EncodedConversation(
        input_ids=torch.tensor(out_ids, dtype=torch.long),
        trained=trained,
        mm_token_type_ids=torch.tensor(out_type, dtype=torch.int32),
        pixel_values=pixel_values,
        image_grid_thw=grid,
        image_spans=image_spans,
        prompt_length=len(out_ids) if prompt_length is None else prompt_length,
        images=None if with_pixels or not images else images,
    )


def truncate(sample: EncodedConversation, max_length: int) -> EncodedConversation:
    """Keep at most `max_length` tokens, cutting before an image rather than through it.

    The cut is at `max_length`, moved back to the start of the image span it would fall in;
    images after the cut are dropped with their pixel rows. Trained tokens after the cut are
    lost (they are counted: `num_trained` falls).

    Args:
        sample: an encoded conversation.
        max_length: the longest sequence the model trains on.

    Returns:
        The sample itself when it fits, else a shorter copy with `truncated=True`.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    if len(sample) <= max_length:
        return sample
    cut = max_length
    kept_images = 0
    for start, end in sample.image_spans:
        if end <= cut:
            kept_images += 1
        else:
            if start < cut:
                cut = start
            break
    cut = max(cut, 1)
    pixel_values, grid, images = sample.pixel_values, sample.image_grid_thw, sample.images
    if grid is not None:
        rows = int(grid[:kept_images].prod(dim=1).sum())
        pixel_values = pixel_values[:rows] if kept_images and pixel_values is not None else None
        images = images[:kept_images] if kept_images and images is not None else None
        grid = grid[:kept_images] if kept_images else None
    return dataclasses.replace(
        sample,
        input_ids=sample.input_ids[:cut],
        trained=sample.trained[:cut],
        mm_token_type_ids=sample.mm_token_type_ids[:cut],
        pixel_values=pixel_values,
        image_grid_thw=grid,
        image_spans=list(sample.image_spans[:kept_images]),
        truncated=True,
        prompt_length=None if sample.prompt_length is None else min(sample.prompt_length, cut),
        images=images,
    )
