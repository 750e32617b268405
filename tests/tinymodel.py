"""A tiny random-weight Llama with a trained tiny byte-level BPE tokenizer and a ChatML template.

Built by the tests in a second or two, a few hundred kB, never downloaded. It stands in for a
real base model everywhere a test needs one (training, scoring, registry loading, flows).
"""
from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The latest close of NIFTY 50 was 12,056.05 points, up +0.53% on the day.",
    "TCS closed at ₹2,154.35 on Friday, 29 November 2019, with a high of ₹2,170.00.",
    "Volume was 3,456,789 shares. Over 5 sessions Reliance Industries returned -1.25%.",
    "What is the trend of HDFC Bank? It trades above its 10-session and 20-session averages.",
    "Annualised volatility of Infosys is 23.45%, a moderate risk level.",
    "SENSEX 52-week high 41,163.79 points, 1.02% below it. ICICI Bank outperformed by +2.10%.",
    "Market summary for Monday, 25 November 2019: NIFTY 50 +0.25%, SENSEX +0.31%.",
    "system user assistant You are niftytune, an assistant for the Indian stock market.",
    "0123456789 .,:;%+-₹()' abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]


def build_tiny_tokenizer(vocab_size: int = 400):
    """A byte-level BPE tokenizer with ChatML special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>",
                                   bos_token="<|im_start|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_model(path: Path, *, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """Write a tiny random Llama (safetensors) and its tokenizer to `path`; return `path`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
