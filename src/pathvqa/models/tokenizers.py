"""Tokenizers built locally for the named tiny sizes (no hub access needed).

A WordPiece vocabulary: special tokens, every letter/digit/punctuation mark (also as ``##``
continuations, so any word can be spelt), and the words of pathology questions and answers as
whole tokens (both synthetic styles' words among them). The same vocabulary serves ``blip-tiny`` (BERT-style, as BLIP uses) and
``vlm-tiny`` (a causal LM with a chat template).
"""

from __future__ import annotations

import string
from collections import OrderedDict

from transformers import BertTokenizer

from pathvqa.data import questions, synthetic

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[INST]", "[/INST]"]
COMMON_WORDS = [
    "a",
    "an",
    "the",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "this",
    "that",
    "these",
    "there",
    "here",
    "what",
    "which",
    "where",
    "how",
    "many",
    "much",
    "who",
    "why",
    "does",
    "do",
    "did",
    "show",
    "shows",
    "shown",
    "seen",
    "see",
    "visible",
    "present",
    "of",
    "in",
    "on",
    "at",
    "to",
    "with",
    "without",
    "and",
    "or",
    "not",
    "no",
    "yes",
    "image",
    "images",
    "picture",
    "section",
    "tissue",
    "cell",
    "cells",
    "nucleus",
    "nuclei",
    "stain",
    "stained",
    "staining",
    "used",
    "by",
    "from",
    "describe",
    "detail",
    "details",
    "finding",
    "findings",
    "organ",
    "lesion",
    "tumor",
    "tumour",
    "normal",
    "abnormal",
    "large",
    "small",
]


def tiny_vocab() -> list[str]:
    words: list[str] = []
    texts = [
        *synthetic.TISSUES,
        *synthetic.STAINS,
        *synthetic.NUMBERS,
        *synthetic.TISSUE_QUESTIONS.values(),
        "what does this image show? what stain is used? how many blood vessels are visible?",
        "are there mitotic figures? are blood vessels present? is this an immunohistochemical stain?",
        "stained section showing with mitotic figures and blood vessel vessels",
        *questions.vocabulary(),
    ]
    for text in texts:
        words.extend(text.replace("?", " ").replace(".", " ").split())
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = SPECIAL + chars + [f"##{c}" for c in string.ascii_lowercase + string.digits]
    for word in [*COMMON_WORDS, *words]:
        if word not in vocab:
            vocab.append(word)
    return vocab


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
