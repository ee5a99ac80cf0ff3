"""Tokenizers built locally for the named tiny sizes (no hub access needed).

A WordPiece vocabulary read from a committed file (``tiny_vocab.txt``): special tokens, every
letter/digit/punctuation mark (also as ``##`` continuations, so any word can be spelt), and the words of
pathology questions and answers as whole tokens. Rewording a synthetic question never changes a model's
vocabulary; a test checks that the synthetic set's words are all in it. The same vocabulary serves
``blip-tiny`` (BERT-style, as BLIP uses) and ``vlm-tiny`` (a causal LM with a chat template).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from transformers import BertTokenizer

VOCAB_FILE = Path(__file__).with_name("tiny_vocab.txt")
"""One token per line: the special tokens, every letter, digit and punctuation mark (letters and digits
also as ``##`` continuations), then whole words of pathology questions and answers."""


def tiny_vocab() -> list[str]:
    return VOCAB_FILE.read_text(encoding="utf-8").splitlines()


def tiny_bert_tokenizer() -> BertTokenizer:
    """BERT-style tokenizer for ``blip-tiny``: [CLS] text [SEP]; ``[DEC]`` starts decoding."""
    vocab = OrderedDict((token, i) for i, token in enumerate(tiny_vocab()))
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, bos_token="[DEC]")
    tokenizer.model_max_length = 64
    return tokenizer


def tiny_chat_tokenizer() -> BertTokenizer:
    """Tokenizer for the ``vlm-tiny`` decoder: the same vocabulary, a Mistral-like chat template."""
    tokenizer = tiny_bert_tokenizer()
    tokenizer.add_special_tokens(
        {"bos_token": "[CLS]", "eos_token": "[SEP]", "additional_special_tokens": ["[INST]", "[/INST]"]}
    )
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
        "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    )
    return tokenizer
