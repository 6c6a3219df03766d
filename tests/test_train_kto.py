"""The KTO stage on the tiny Qwen2.5-VL: labelled batches, mismatched pairs, the three references, a fit."""

from __future__ import annotations

import csv
import dataclasses

import lightning as L
import pytest
import torch
from eva_core.sample_video import write_sample_video
from eva_train.data.conversations import ConversationStream, SFTStream
from eva_train.data.datamodules import KTODataModule
from eva_train.data.loaders import StreamPosition
from eva_train.data.sources import ListSource
from eva_train.encoding.collate import KTOBatch, SFTBatch, collate_kto
from eva_train.encoding.kl_pairs import (
    Prompt,
    batch_prompts,
    mismatched_batch,
    pair_id,
    partner,
    prompt_lengths,
)
from eva_train.model.loading import LoraSpec, ModelSpec, load_model
from eva_train.model.optim import OptimSpec
from eva_train.objectives.logprobs import policy_logprobs
from eva_train.objectives.losses import KTOWeightWarning, kto_loss, sequence_logps
from eva_train.objectives.precompute import precompute_reference
from eva_train.objectives.reference import (
    AdapterReference,
    ModelReference,
    PrecomputedReference,
    ReferenceError,
    ReferenceSpec,
)
from eva_train.stages.kto import KTOModule
from train_conversations import make_conversations

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    video = write_sample_video(tmp_path_factory.mktemp("kto") / "v.mp4", duration=8.0, fps=10, width=336,
                               height=252, gop=10)
    samples = make_conversations(video, 6)
    return [dataclasses.replace(s, meta={"desirable": i % 3 != 1}) for i, s in enumerate(samples)]


def _kto_stream(samples, path, **kw):
    options = {"batch_size": 3, "max_length": 4096, "window_batches": 1, "seed": 0, "shuffle": False} | kw
    return ConversationStream(ListSource(samples, shuffle=False), str(path), collate=collate_kto, **options)


def _batches(samples, path, **kw):
    return [b for b, _ in _kto_stream(samples, path, **kw).batches(StreamPosition())]


def test_labels_survive_encoding_and_to_keeps_every_field(labelled, tiny_model_dir):
    batches = _batches(labelled, tiny_model_dir)
    assert all(type(b) is KTOBatch for b in batches)
    by_id = {s.sample_id: s.meta["desirable"] for s in labelled}
    for b in batches:
        assert b.desirable.tolist() == [by_id[i] for i in b.sample_ids]
        moved = b.to("cpu")
        assert type(moved) is KTOBatch and moved.sample_ids == b.sample_ids
        assert torch.equal(moved.desirable, b.desirable) and moved.num_tokens == b.num_tokens
    # The SFT stream still gives SFT batches of the same rows.
    sft = [b for b, _ in SFTStream(ListSource(labelled, shuffle=False), str(tiny_model_dir), batch_size=3,
                                   max_length=4096, window_batches=1, shuffle=False).batches(StreamPosition())]
    assert all(type(b) is SFTBatch for b in sft)
    assert [torch.equal(s.input_ids, k.input_ids) for s, k in zip(sft, batches, strict=True)] == [True, True]
    unlabelled = [dataclasses.replace(s, meta={}) for s in labelled]
    with pytest.raises(ValueError, match="no boolean meta\\['desirable'\\] label"):
        _batches(unlabelled, tiny_model_dir)


def test_pairs_rotate_over_the_global_batch(labelled, tiny_model_dir):
    whole = _batches(labelled, tiny_model_dir, batch_size=6)[0]
    prompts = batch_prompts(whole)
    assert len({p.token_ids for p in prompts}) > 1  # the questions differ
    pairs = mismatched_batch(whole, prompts, 0)
    lengths = prompt_lengths(whole)
    partners = [partner(i, prompts) for i in range(6)]
    assert all(prompts[j].token_ids != prompts[i].token_ids for i, j in enumerate(partners))  # mismatched
    for i, j in enumerate(partners):
        n = int(whole.attention_mask[i].sum())
        completion = whole.input_ids[i, lengths[i]:n]
        expected = torch.cat([torch.tensor(prompts[j].token_ids), completion])
        m = int(pairs.attention_mask[i].sum())
        assert torch.equal(pairs.input_ids[i, :m], expected)
        assert int(pairs.trained[i].sum()) == int(whole.trained[i].sum())  # the same assistant tokens scored
        assert pairs.sample_ids[i] == pair_id(whole.sample_ids[j], whole.sample_ids[i])
    assert pairs.pixel_values is whole.pixel_values
    # Two "ranks" of 3 rows each, with the gathered prompts, build the same pairs.
    halves = [whole.__class__(**{f.name: _rows(getattr(whole, f.name), r) for f in dataclasses.fields(whole)})
              for r in (slice(0, 3), slice(3, 6))]
    split = [mismatched_batch(h, prompts, 3 * k) for k, h in enumerate(halves)]
    assert split[0].sample_ids + split[1].sample_ids == pairs.sample_ids
    with pytest.raises(ValueError, match="at least 2 rows"):
        mismatched_batch(whole, prompts[:1], 0)


def test_a_credited_row_scores_its_blamed_tokens_and_keeps_its_opening_turns_as_prompt(labelled, tiny_model_dir):
    """An undesirable blamed from its answer turn (`ChatSample.trained_from`): its prompt is still
    the opening turns (no image), and its pair is scored on the same blamed tokens."""
    samples = list(labelled)
    bad = samples[1]  # undesirable: look, then answer; blamed from inside the answer turn
    answer = max(i for i, m in enumerate(bad.messages) if m["role"] == "assistant")
    flags = [i == answer for i in range(len(bad.messages))]
    samples[1] = dataclasses.replace(bad, trained_turns=flags, trained_from=(answer, 10))
    whole, credited = _batches(labelled, tiny_model_dir)[0], _batches(samples, tiny_model_dir)[0]
    assert credited.sample_ids == whole.sample_ids
    row = credited.sample_ids.index(bad.sample_id)
    assert credited.prompt_lengths == whole.prompt_lengths == tuple(prompt_lengths(whole))
    assert int(credited.trained[row].sum()) < int(whole.trained[row].sum())
    first = int(credited.trained[row].nonzero()[0])
    assert bool(credited.mm_token_type_ids[row, :first].any()) and not credited.mm_token_type_ids[row, first:].any()
    pairs = mismatched_batch(credited, batch_prompts(credited), 0)
    assert int(pairs.trained[row].sum()) == int(credited.trained[row].sum())
    assert pairs.prompt_lengths == tuple(len(p.token_ids) for p in
                                         (batch_prompts(credited)[partner(i, batch_prompts(credited))]
                                          for i in range(credited.rows)))


def test_partner_skips_rows_with_the_same_prompt():
    # Items a, b, c with a desirable and an undesirable trajectory each, stored side by side.
    prompts = [Prompt(f"{item}{k}", (i,)) for i, item in enumerate("abc") for k in (0, 1)]
    assert [partner(g, prompts) for g in range(6)] == [2, 2, 4, 4, 0, 0]  # a0 -> b0 (not a1), ..., c1 -> a0
    same = [Prompt(str(k), (7,)) for k in range(3)]
    assert [partner(g, same) for g in range(3)] == [1, 2, 0]  # no other prompt: the next row


def _rows(value, rows):
    """Rows of a batch field (pixel values are left whole: only ids are compared above)."""
    if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == 6:
        return value[rows]
    if isinstance(value, tuple):
        return value[rows]
    return value


def _loss(policy_model, reference, batch, pairs):
    policy = sequence_logps(policy_logprobs(policy_model, batch), batch.trained)
    pair_policy = sequence_logps(policy_logprobs(policy_model, pairs), pairs.trained)
    loss, metrics = kto_loss(policy, reference.sequence_logps(batch), batch.desirable,
                             kl_policy_logps=pair_policy, kl_reference_logps=reference.sequence_logps(pairs))
    return loss.item(), metrics["z0"].item()


def test_disabled_adapters_frozen_copy_and_precomputed_give_the_same_loss(labelled, tiny_model_dir):
    spec = ModelSpec(path=str(tiny_model_dir), dtype="float32")
    policy = load_model(spec, LoraSpec(r=4, alpha=8, dropout=0.0)).eval()
    with torch.no_grad():  # move the adapters away from B = 0, so policy and reference differ
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(hash(name) % 2**31))
    stream = _kto_stream(labelled, tiny_model_dir)
    batch = [b for b, _ in stream.batches(StreamPosition())][0]
    pairs = mismatched_batch(batch, batch_prompts(batch), 0)
    copy = ModelReference(load_model(spec).requires_grad_(False).eval())
    table = precompute_reference(copy, [stream], epochs=1)
    assert set(batch.sample_ids) | set(pairs.sample_ids) <= set(table)
    with torch.no_grad():
        results = {name: _loss(policy, ref, batch, pairs) for name, ref in
                   [("adapters", AdapterReference(policy)), ("copy", copy), ("precomputed", PrecomputedReference(table))]}
    (loss, z0) = results["copy"]
    assert abs(loss - 0.5) > 1e-3  # the adapters changed the policy: rewards are not 0
    for name, (other_loss, other_z0) in results.items():
        assert other_loss == pytest.approx(loss, abs=1e-6), name
        assert other_z0 == pytest.approx(z0, abs=1e-6), name
    with pytest.raises(ReferenceError, match="no precomputed reference log-prob"):
        PrecomputedReference({}).sequence_logps(batch)
    with pytest.raises(ReferenceError, match="needs a LoRA"):
        AdapterReference(load_model(spec))
    with pytest.raises(ReferenceError, match="required for kind 'precomputed'"):
        ReferenceSpec(kind="precomputed")


def test_kto_fit_moves_the_policy_not_the_reference_and_logs_its_metrics(tmp_path, labelled, tiny_model_dir):
    spec = ModelSpec(path=str(tiny_model_dir), dtype="float32", freeze_vision_tower=True)
    module = KTOModule(spec, optim=OptimSpec(lr=1e-3, warmup_ratio=0.0, schedule="constant"), beta=0.5)
    data = KTODataModule(str(tiny_model_dir), ListSource(labelled * 2, seed=0), batch_size=4, max_length=4096,
                         window_batches=1)
    module.configure_model()
    assert isinstance(module.reference, ModelReference)  # full fine-tuning: a frozen copy
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    reference_before = {n: p.detach().clone() for n, p in module.reference_model.named_parameters()}
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=3, logger=L.pytorch.loggers.CSVLogger(tmp_path),
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                        default_root_dir=tmp_path)
    trainer.fit(module, data)
    for name, p in module.policy.named_parameters():
        moved = not torch.equal(p.detach(), before[name])
        assert moved == p.requires_grad, name
    assert all(torch.equal(p, reference_before[n]) for n, p in module.reference_model.named_parameters())
    with open(trainer.logger.log_dir + "/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    assert len(rows) == 3
    for column in ("train/z0", "train/reward_desirable", "train/reward_undesirable", "train/margin",
                   "train/accuracy_desirable", "train/accuracy_undesirable"):
        assert column in rows[0]
    # At step 1 the policy is the reference: every reward is 0, z0 is 0, the loss is 1 - sigmoid(0).
    assert float(rows[0]["train/loss"]) == pytest.approx(0.5, abs=1e-5)
    assert float(rows[0]["train/z0"]) == pytest.approx(0.0, abs=1e-4)
    ckpt = torch.load(trainer.checkpoint_callback.last_model_path or trainer.checkpoint_callback.best_model_path,
                      map_location="cpu", weights_only=True)
    assert not any(k.startswith("reference_model.") for k in ckpt["state_dict"])
    assert ckpt["eva_train"]["stage"] == "KTOModule" and ckpt["eva_train"]["reference"]["kind"] == "auto"


def test_sft_weight_adds_the_desirable_rows_nll(labelled, tiny_model_dir):
    """L = L_KTO + alpha * NLL of the desirable rows' trained tokens; undesirable rows add none."""
    spec = ModelSpec(path=str(tiny_model_dir), dtype="float32")
    batch = _batches(labelled, tiny_model_dir)[0]
    assert batch.desirable.any() and not batch.desirable.all()
    losses = {}
    for alpha in (0.0, 0.5):
        module = KTOModule(spec, sft_weight=alpha)
        module.configure_model()
        torch.manual_seed(0)
        with torch.no_grad():
            loss, metrics = module.kto_step(batch)
        losses[alpha] = float(loss)
    with torch.no_grad():
        logps = policy_logprobs(module.policy.eval(), batch)
    mask = batch.trained & batch.desirable[:, None]
    nll = float(-(logps * mask).sum() / mask.sum())
    assert float(metrics["nll_desirable"]) == pytest.approx(nll, rel=1e-4)
    assert losses[0.5] - losses[0.0] == pytest.approx(0.5 * nll, rel=1e-4)
    with pytest.raises(ValueError, match="sft_weight"):
        KTOModule(spec, sft_weight=-1.0)


def test_kto_data_refuses_a_global_batch_of_one_and_warns_on_weights(tiny_model_dir):
    data = KTODataModule(str(tiny_model_dir), ListSource([object()]), batch_size=1)
    with pytest.raises(ValueError, match="global batch of at least 2"):
        data.setup("fit")

    class Counted:
        def label_counts(self):
            return 9, 1

    module = KTOModule(ModelSpec(path=str(tiny_model_dir)))
    module.trainer = type("T", (), {"datamodule": type("D", (), {"train_source": Counted()})()})()
    with pytest.warns(KTOWeightWarning, match="= 9"):
        module.on_fit_start()
