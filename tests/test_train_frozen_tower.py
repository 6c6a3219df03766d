"""A frozen vision tower costs one forward and no backward, and LoRA's gradients do not change (issue 15).

The reference is the model as it was before the fix: `activation_checkpointing_enable` run again
on the loaded model puts back both what `keep_frozen_tower_out_of_backward` undoes (the input
grad hook on the tower's patch embedding, the tower's checkpointing).
"""

from __future__ import annotations

import pytest
import torch
from eva_core.sample_video import write_sample_video
from eva_train.encoding.collate import collate
from eva_train.encoding.masking import encode_conversation
from eva_train.model.loading import LoraSpec, ModelSpec, base_model, load_model, vision_modules
from eva_train.objectives.logprobs import policy_logprobs
from eva_train.objectives.losses import sft_loss
from train_conversations import make_conversations
from transformers import AutoProcessor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def batch(tmp_path_factory, tiny_model_dir):
    video = write_sample_video(tmp_path_factory.mktemp("tower") / "v.mp4", duration=6.0, fps=10, width=336,
                               height=252, gop=10)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    encoded = [encode_conversation(processor, c.messages) for c in make_conversations(video, 3)[1:]]
    return collate(encoded, pad_id=processor.tokenizer.pad_token_id)


def _lora_model(path, *, before_the_fix: bool = False):
    spec = ModelSpec(path=str(path), dtype="float32", gradient_checkpointing=True, freeze_vision_tower=True)
    model = load_model(spec, LoraSpec(r=4, alpha=8, dropout=0.0))
    if before_the_fix:
        base_model(model).activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    # B starts at 0, which would leave every A without gradient; the same nonzero B in both models.
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.1)
    return model


def _step(model, batch):
    """One forward and backward: LoRA gradients, tower calls per block, whether tower outputs need grad."""
    visual, _ = vision_modules(base_model(model))
    calls, needs_grad, handles = [0] * len(visual.blocks), [], []
    for i, block in enumerate(visual.blocks):
        # Inside the block: transformers checkpoints `forward`, so the block's own hooks run once
        # even when backward recomputes it.
        handles.append(block.mlp.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1)))
    for module in (visual.patch_embed, *visual.blocks):
        handles.append(module.register_forward_hook(lambda _m, _i, out: needs_grad.append(out.requires_grad)))
    loss, _ = sft_loss(policy_logprobs(model, batch), batch.trained)
    loss.backward()
    for h in handles:
        h.remove()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return grads, calls, needs_grad


def test_frozen_tower_runs_once_without_grad_and_lora_gradients_are_unchanged(tiny_model_dir, batch):
    assert batch.pixel_values is not None
    grads, calls, needs_grad = _step(_lora_model(tiny_model_dir), batch)
    ref_grads, ref_calls, ref_needs_grad = _step(_lora_model(tiny_model_dir, before_the_fix=True), batch)

    # Before: the tower's activations required grad and backward recomputed every block.
    assert all(ref_needs_grad) and ref_calls == [2] * len(ref_calls)
    # After: one forward per block, and no tower output (hence no tower activation) in the graph.
    assert calls == [1] * len(calls)
    assert needs_grad and not any(needs_grad)

    assert sorted(grads) == sorted(ref_grads)
    assert len(grads) == 2 * 7 * 2  # A and B of 7 projections in each of the 2 decoder layers
    for name, grad in grads.items():
        assert grad is not None and grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_a_trained_tower_keeps_its_gradients(tiny_model_dir, batch):
    spec = ModelSpec(path=str(tiny_model_dir), dtype="float32", gradient_checkpointing=True)
    model = load_model(spec, LoraSpec(r=4, alpha=8, dropout=0.0, vision=True))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.01)
    grads, _, _ = _step(model, batch)
    vision = [n for n in grads if ".visual.blocks." in n]
    assert vision and all(grads[n] is not None and grads[n].abs().sum() > 0 for n in vision)
