"""Packing as the gpu profile does it (trl bfd packing, padding-free rows with per-sample position
ids; sdpa/eager attention and the varlen attention's CPU path here; flex_attention and the varlen
flash kernel on the GPU are checked by `benchmarks/train_throughput.py packcheck`) gives exactly
the losses of unpacked batches: no cross-sample attention."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tasks.training import varlen_attention
from tasks.config import load_config
from tasks.training.train import build_sft_config, tokenize_samples
from tests.tasks.test_training import write_samples


# What the trainer hands the model from a padding-free batch (the collator's conversation
# boundaries included: the varlen attention reads them).
MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q",
                "max_length_k")


def per_token_nll(model, batch: dict) -> torch.Tensor:
    """Summed next-token NLL over the labelled tokens of a batch (labels unshifted, -100 ignored)."""
    inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
    logits = model(**inputs).logits.float()
    labels = batch["labels"][:, 1:]
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(picked * (labels != -100)).sum()


def gpu_like_trainer(tmp_path: Path, model_dir: Path, attn: str):
    """An SFTTrainer built from the gpu profile's settings (packing on), in float32 on CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    cfg = load_config("gpu", overrides={"training.base_model": str(model_dir), "training.max_length": 256,
                                        "training.per_device_train_batch_size": 3,
                                        "training.attn_implementation": attn,
                                        # In-process collation: the test inspects the batches themselves.
                                        "training.dataloader_num_workers": 0,
                                        "training.use_liger_kernel": False})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if attn == "varlen":
        varlen_attention.register()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attn).eval()
    samples = write_samples(tmp_path / "samples", n_train=9, n_val=2)
    data = tokenize_samples(samples.train_path, tokenizer, cfg.training.max_length)
    # Vary the lengths so that packed rows hold several conversations of different sizes.
    data = data.map(lambda row, i: {k: v[: len(v) - 2 * i] for k, v in row.items()}, with_indices=True)
    args = build_sft_config(cfg, tmp_path / "out", compute_dtype=torch.float32, progress=False)
    args.bf16 = args.fp16 = False
    return SFTTrainer(model=model, args=args, train_dataset=data, eval_dataset=data.select([0]),
                      processing_class=tokenizer), data


def leaky(batch: dict, attn: str) -> dict:
    """The same packed row with attention allowed across its conversations: an all-ones mask for
    the mask-based kernels, one boundary around the whole row for varlen."""
    if attn != "varlen":
        return {**batch, "attention_mask": torch.ones_like(batch["input_ids"])}
    n = batch["input_ids"].shape[1]
    return {**batch, "cu_seq_lens_q": torch.tensor([0, n], dtype=torch.int32),
            "cu_seq_lens_k": torch.tensor([0, n], dtype=torch.int32), "max_length_q": n, "max_length_k": n}


@pytest.mark.parametrize("attn", ["sdpa", "eager", "varlen"])
def test_packed_padding_free_batches_give_the_unpacked_loss(tmp_path, tiny_model_dir, attn, monkeypatch):
    segments_seen = []
    real_segments = varlen_attention._sdpa_segments

    def counted_segments(q, k, v, cu, scaling):
        segments_seen.append(len(cu) - 1)
        return real_segments(q, k, v, cu, scaling)
    monkeypatch.setattr(varlen_attention, "_sdpa_segments", counted_segments)
    trainer, data = gpu_like_trainer(tmp_path, tiny_model_dir, attn)
    assert trainer.padding_free and trainer.args.packing
    packed = list(trainer.get_train_dataloader())  # each batch: 3 packed rows flattened into one sequence
    assert all(b["input_ids"].shape[0] == 1 and int((b["position_ids"] == 0).sum()) > 3 for b in packed[:-1])
    assert all("attention_mask" not in b for b in packed)
    model = trainer.model
    with torch.no_grad():
        packed_sum = sum(per_token_nll(model, b) for b in packed)
        packed_calls = len(segments_seen)
        single = [{"input_ids": torch.tensor([r["input_ids"]]),
                   "labels": torch.tensor([[t if m else -100 for t, m in zip(r["input_ids"], r["completion_mask"])]])}
                  for r in data]
        unpacked_sum = sum(per_token_nll(model, b) for b in single)
        # Control: the same packed rows with an all-ones mask let attention cross samples.
        leaky_sum = sum(per_token_nll(model, leaky(b, attn)) for b in packed)
    n_tokens = sum(int((b["labels"] != -100).sum()) for b in single)
    assert n_tokens == sum(int((b["labels"][:, 1:] != -100).sum()) for b in packed)
    torch.testing.assert_close(packed_sum / n_tokens, unpacked_sum / n_tokens, rtol=0, atol=1e-5)
    print(f"{len(packed)} padding-free batches for {len(single)} conversations, {n_tokens} answer tokens: mean NLL "
          f"packed {float(packed_sum) / n_tokens:.6f}, unpacked {float(unpacked_sum) / n_tokens:.6f}, "
          f"packed with a leaky mask {float(leaky_sum) / n_tokens:.6f}")
    assert abs(float(leaky_sum - unpacked_sum)) / n_tokens > 1e-3
    if attn == "varlen":
        # Every layer of every packed batch went through the segments the collator computed.
        layers = model.config.num_hidden_layers
        assert packed_calls == layers * len(packed)
        starts = [int((b["position_ids"] == 0).sum()) for b in packed]
        assert segments_seen[:packed_calls] == [n for n in starts for _ in range(layers)]
