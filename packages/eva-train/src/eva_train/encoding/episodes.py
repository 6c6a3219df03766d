"""A sampled episode as the training sequence: the exact ids, images and positions the policy read.

`encode_episode` concatenates, step by step, the ids a rollout engine fed
(`TurnTokens.prompt_ids`) and the ids it sampled (`TurnTokens.completion_ids`): nothing is
rendered with the chat template or tokenized again, so the sequence is the one sampled, token
for token (re-rendering the text changes the tokens: measured on 6 of 6 tiny-model episodes).
The images are the frames each tool turn showed (`Step.frames`), in order; they go through the
image processor once, over the whole sequence, and the model computes the M-RoPE positions
once over the whole sequence from `mm_token_type_ids` and `image_grid_thw`, as at rollout
(`eva_core.backends.token_context`). The mask is 1 exactly on sampled ids: the turn headers,
tool turns and template tokens the engine inserted carry no loss.

An episode's last tool turn, if any, was never read by the model (turn limit or context full),
so it is not part of the sequence; its frames are not kept (`Step.frames`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from eva_core.episode import Episode
from torch import Tensor

from eva_train.encoding.masking import EncodedConversation, image_grids, pixel_values_for


@dataclass
class EncodedEpisode:
    """An episode as training reads it.

    Attributes:
        conversation: ids, the sampled-token mask, image inputs (collate with `eva_train.encoding.collate`).
        sampled_logprobs: [T] float32, the engine's log-probability of each sampled token at
            its position (where `conversation.trained`), 0 elsewhere.
    """

    conversation: EncodedConversation
    sampled_logprobs: Tensor

    def __post_init__(self) -> None:
        if self.sampled_logprobs.shape != self.conversation.trained.shape:
            raise ValueError("sampled_logprobs must be [T] like the conversation's mask")


def _image_runs(ids: Tensor, image_token_id: int) -> list[tuple[int, int]]:
    """(start, end) of each run of the image placeholder id, end exclusive."""
    is_image = (ids == image_token_id).int()
    edges = torch.diff(is_image, prepend=is_image.new_zeros(1), append=is_image.new_zeros(1))
    starts = (edges == 1).nonzero().flatten().tolist()
    ends = (edges == -1).nonzero().flatten().tolist()
    return list(zip(starts, ends, strict=True))


def encode_episode(episode: Episode, processor, *, with_pixels: bool = True) -> EncodedEpisode:
    """The training sequence of a sampled episode.

    Args:
        episode: sampled by a rollout engine (every step has `tokens`), frames kept in memory.
        processor: the model's processor (tokenizer and image processor).
        with_pixels: run the image processor now; False keeps the frames (`collate` processes a batch).

    Returns:
        The encoded episode; its `conversation.trained` is True exactly on sampled ids.

    Raises:
        ValueError: a step has no tokens, or the frames do not match the image placeholders.
    """
    ids: list[int] = []
    trained: list[bool] = []
    logprobs: list[float] = []
    frames: list[Tensor] = []
    for k, step in enumerate(episode.steps):
        if step.tokens is None:
            raise ValueError(f"step {k} has no token record: sample the episode with a rollout engine")
        prompt, sampled = step.tokens.prompt_ids, step.tokens.completion_ids
        ids += prompt + sampled
        trained += [False] * len(prompt) + [True] * len(sampled)
        logprobs += [0.0] * len(prompt) + list(step.tokens.completion_logprobs)
        frames += step.frames
    if not ids:
        raise ValueError("the episode has no turns")
    input_ids = torch.tensor(ids, dtype=torch.long)
    image_token = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    runs = _image_runs(input_ids, image_token)
    if len(runs) != len(frames):
        raise ValueError(f"{len(runs)} runs of image placeholders but {len(frames)} frames kept")
    pixel_values, grid = None, None
    if frames:
        pixel_values, grid = _image_inputs(processor.image_processor, frames, runs, with_pixels=with_pixels)
    mask = torch.tensor(trained, dtype=torch.bool)
    mask[0] = False  # nothing predicts the first token (a prompt token anyway)
    conversation = EncodedConversation(
        input_ids=input_ids, trained=mask, mm_token_type_ids=(input_ids == image_token).int(),
        pixel_values=pixel_values, image_grid_thw=grid,
        image_spans=[(start - 1, end + 1) for start, end in runs],  # with <|vision_start|> and <|vision_end|>
        images=None if with_pixels or not frames else list(frames))
    return EncodedEpisode(conversation, torch.tensor(logprobs, dtype=torch.float32))


def _image_inputs(image_processor, frames: Sequence[Tensor], runs: Sequence[tuple[int, int]], *,
                  with_pixels: bool) -> tuple[Tensor | None, Tensor]:
    """(pixel_values or None, image_grid_thw) of the frames, checked against the placeholder runs."""
    if with_pixels:
        pixel_values, grid = pixel_values_for(image_processor, frames)
    else:
        pixel_values, grid = None, image_grids(image_processor, frames)
    merge = image_processor.merge_size
    tokens = (grid.prod(dim=1) // (merge * merge)).tolist()
    if tokens != [end - start for start, end in runs]:
        raise ValueError(f"the frames make {tokens} image tokens, the sampled ids hold {[e - s for s, e in runs]}")
    return pixel_values, grid


def blank_image_row(processor) -> EncodedConversation:
    """A row of one blank image and nothing trained: `<|vision_start|>`, one image token, `<|vision_end|>`.

    Under FSDP2 the vision tower is a set of units of its own, gathered in the model's forward
    (after the root unit, before the language blocks) and reduced in its backward. A GRPO
    micro-batch whose episodes never showed a frame (every call derailed) skips the tower,
    while another rank's micro-batch runs it, and the ranks' collectives no longer match ("Received
    data size doesn't match expected size"). Appended to such a micro-batch, this row makes the
    forward and backward run the tower in the same order as on every other rank; it trains
    nothing and the other rows do not see it, so the loss and gradients are unchanged.
    """
    image_processor = processor.image_processor
    side = image_processor.patch_size * image_processor.merge_size  # one merged patch: 1 token
    pixel_values, grid = pixel_values_for(image_processor, [torch.zeros(3, side, side, dtype=torch.uint8)])
    tokenizer = processor.tokenizer
    ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|vision_start|>", processor.image_token, "<|vision_end|>")]
    input_ids = torch.tensor(ids, dtype=torch.long)
    return EncodedConversation(input_ids=input_ids, trained=torch.zeros(3, dtype=torch.bool),
                               mm_token_type_ids=torch.tensor([0, 1, 0], dtype=torch.int32), pixel_values=pixel_values,
                               image_grid_thw=grid, image_spans=[(0, 3)], sample_id="blank-image")
