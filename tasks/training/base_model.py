"""The base model: which one (embedded, hub or local folder), its cached conversion, and loading.

    ref = resolve_base_model(cfg.training, home)     # embedded GGUF -> safetensors folder, once
    model, tokenizer = load_base(ref, cfg.training, for_training=True)

The embedded SmolLM2-135M-Instruct is converted once from its GGUF (tasks.training.embedded) and
from then on loaded like any other local model: offline, safetensors only, no remote code.
"""
from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from common.files import sha256_file
from tasks.config import EMBEDDED_BASE_MODEL, TrainingConfig
from tasks.training.embedded import CONVERTED_MARKER, BaseModelError, ensure_embedded_base

if TYPE_CHECKING:  # imported where used: importing this module stays cheap
    import torch
    from transformers import BitsAndBytesConfig

log = logging.getLogger(__name__)

# Two messages every CPU run printed that say nothing about the run: bitsandbytes (imported by
# peft) looking for optional CPU kernels it does not need, and transformers warning about its
# own internal call of a renamed method. Silenced here, where every model load passes.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)

WEIGHT_SUFFIXES = (".safetensors",)
# Tried in order when a tokenizer has no pad token; eos is the fallback. Labels are built from
# the completion mask, never from pad ids, so pad == eos does not hide end-of-turn tokens.
RESERVED_PAD_TOKENS = ("<|finetune_right_pad_id|>", "<|pad|>", "<pad>", "[PAD]", "<|endoftext|>")
HUB_FILE_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.txt"]

Source = Literal["embedded", "hub", "local"]


@dataclass(frozen=True)
class BaseModelRef:
    """A resolved base model: the local folder to load and what identifies it in a manifest."""

    path: Path
    identity: str
    revision: str | None
    file_hash: str
    source: Source


def hash_weight_files(folder: Path) -> str:
    """One sha256 over the names and contents of a model folder's safetensors weight files."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise BaseModelError(f"{folder}: no safetensors weight files (only safetensors are loaded)")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def _resolve_hub(training: TrainingConfig) -> BaseModelRef:
    """Download (or find in the hub cache) a pinned hub snapshot: safetensors, config, tokenizer."""
    from huggingface_hub import snapshot_download

    if not training.base_revision:
        raise BaseModelError(f"hub base model {training.base_model!r} needs training.base_revision "
                             "(a commit hash) so that runs are reproducible")
    folder = Path(snapshot_download(training.base_model, revision=training.base_revision,
                                    allow_patterns=HUB_FILE_PATTERNS))
    # The snapshot folder is named by the commit the revision resolved to.
    return BaseModelRef(path=folder, identity=training.base_model, revision=folder.name,
                        file_hash=hash_weight_files(folder), source="hub")


def resolve_base_model(training: TrainingConfig, home: Path) -> BaseModelRef:
    """Resolve `training.base_model` to a local folder and the identity a manifest records."""
    name = training.base_model
    if name.startswith("embedded:"):
        if name != EMBEDDED_BASE_MODEL:
            raise BaseModelError(f"unknown embedded model {name!r}; the only one is {EMBEDDED_BASE_MODEL!r}")
        folder = ensure_embedded_base(home)
        sha = json.loads((folder / CONVERTED_MARKER).read_text())["gguf_sha256"]
        return BaseModelRef(path=folder, identity=name, revision=None, file_hash=sha, source="embedded")
    local = Path(name).expanduser()
    if local.is_dir():
        folder = local.resolve()
        return BaseModelRef(path=folder, identity=str(folder), revision=None,
                            file_hash=hash_weight_files(folder), source="local")
    if local.is_absolute() or name.startswith((".", "~")) or name.count("/") != 1:
        raise BaseModelError(f"base model {name!r} is neither an existing folder nor a hub id (owner/name)")
    return _resolve_hub(training)


def default_device() -> str:
    """`cuda` where a CUDA GPU is visible, else `cpu`."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX): without it, bf16 is
    converted to float32 around every matmul and runs slower than float32 itself."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_compute_dtype(training: TrainingConfig, device: str) -> "torch.dtype":
    """The dtype of weights and matmuls: bf16 where supported, else fp16 on CUDA; on a CPU bf16
    where it multiplies bf16 in hardware (`cpu_has_native_bf16`), else fp32 (unless
    `compute_dtype` names one). fp16 AMP is never run over bf16 weights."""
    import torch

    cuda = str(device).startswith("cuda")
    bf16_ok = torch.cuda.is_bf16_supported() if cuda else True
    if training.compute_dtype == "auto":
        if not cuda:
            return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
        return torch.bfloat16 if bf16_ok else torch.float16
    if training.compute_dtype == "bfloat16" and not bf16_ok:
        raise BaseModelError(f"compute_dtype bfloat16 is not supported on {device}; use auto or float16")
    return getattr(torch, training.compute_dtype)


def build_bnb_config(training: TrainingConfig, device: str | None = None) -> "BitsAndBytesConfig | None":
    """4-bit quantization settings (NF4, double quant, explicit compute dtype), or None."""
    from transformers import BitsAndBytesConfig

    if not training.load_in_4bit:
        return None
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=training.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=training.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=resolve_compute_dtype(training, device or default_device()))


def ensure_pad_token(tokenizer: Any, model: Any | None = None) -> None:
    """Give the tokenizer a pad token (a reserved token, else eos) if it has none, and say so."""
    if tokenizer.pad_token is None:
        vocab = tokenizer.get_vocab()
        token = next((t for t in RESERVED_PAD_TOKENS if t in vocab), tokenizer.eos_token)
        if token is None:
            raise BaseModelError(f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an eos token")
        log.warning("tokenizer %s has no pad token; using %r", tokenizer.name_or_path, token)
        tokenizer.pad_token = token
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if model.generation_config is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id


def _keep_cpu_4bit_trainable(model: Any) -> None:
    """Stop bitsandbytes repacking 4-bit weights for its AVX512-BF16 inference kernel.

    bitsandbytes 0.50 `Linear4bit.forward` repacks the weight the first time it runs in eval
    mode on such a CPU, for good; the repacked path (`gemv_4bit`) has no autograd, so training
    after an evaluation silently gets wrong gradients (tests/tasks/test_base_model.py shows it).
    Training and scoring both evaluate, so both keep the trainable layout."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def load_tokenizer(ref: BaseModelRef) -> Any:
    """The base model's tokenizer (with chat template), offline, with a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ref.path, trust_remote_code=False, local_files_only=True)
    ensure_pad_token(tokenizer)
    if not getattr(tokenizer, "chat_template", None):
        raise BaseModelError(f"{ref.identity}: the tokenizer has no chat template; use an instruct/chat model")
    return tokenizer


def load_base(ref: BaseModelRef, training: TrainingConfig, *, for_training: bool) -> tuple[Any, Any]:
    """Load the base model and tokenizer from the ref's local folder: offline, safetensors only,
    no remote code; 4-bit NF4 when `training.load_in_4bit`; in the resolved compute dtype."""
    from transformers import AutoModelForCausalLM

    device = default_device()
    tokenizer = load_tokenizer(ref)
    attention = training.attn_implementation
    if not for_training and attention in ("flex_attention", "varlen"):
        # Scoring and answering run padded batches, not packed ones: flex attention would only
        # recompile for every new padded shape, varlen takes no padding, sdpa computes the same.
        attention = "sdpa"
    if attention == "varlen":
        from tasks.training import varlen_attention

        try:
            varlen_attention.check_device(device)
        except varlen_attention.VarlenAttentionError as exc:
            raise BaseModelError(str(exc)) from None
        varlen_attention.register()
    model = AutoModelForCausalLM.from_pretrained(
        ref.path, dtype=resolve_compute_dtype(training, device), use_safetensors=True,
        quantization_config=build_bnb_config(training, device), attn_implementation=attention,
        device_map={"": 0} if device == "cuda" else None, trust_remote_code=False, local_files_only=True)
    ensure_pad_token(tokenizer, model)
    if training.load_in_4bit and device == "cpu":
        _keep_cpu_4bit_trainable(model)
    if for_training:
        model.config.use_cache = False  # the KV cache is useless in training and warns with checkpointing
    else:
        model.eval()
    return model, tokenizer


def fits_twice(nbytes: int, device: Any) -> bool:
    """Whether twice `nbytes` is free on a CUDA device (room for a copy and what runs beside
    it); always true elsewhere."""
    import torch

    return device.type != "cuda" or torch.cuda.mem_get_info(device)[0] >= 2 * nbytes


def dequantize_for_scoring(model: Any) -> bool:
    """Swap a 4-bit base's NF4 layers for plain layers holding their dequantised weights, when
    twice their size is free on the device. A 4-bit layer dequantises its weight on every call
    (every forward pass, every generated token) and then runs the same matmul, so scores are
    unchanged and scoring runs at the speed of the plain model. Returns whether it did."""
    import transformers

    quantized = [m for m in model.modules() if getattr(getattr(m, "weight", None), "quant_state", None) is not None]
    if not getattr(model, "is_loaded_in_4bit", False) or not quantized:
        return False
    dtype = quantized[0].weight.quant_state.dtype
    need = sum(m.in_features * m.out_features for m in quantized) * dtype.itemsize
    if not fits_twice(need, next(model.parameters()).device):
        log.info("scoring on the 4-bit weights: dequantised they need %.1f GB, less than twice that is free",
                 need / 1e9)
        return False
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # it announces the dtype of every dequantisation
    try:
        model.dequantize(dtype=dtype)
    finally:
        transformers.logging.set_verbosity(verbosity)
    model.requires_grad_(False)
    log.info("scoring on the NF4 weights dequantised once to %s (%.1f GB)", dtype, need / 1e9)
    return True
