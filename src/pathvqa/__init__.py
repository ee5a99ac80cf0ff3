"""pathvqa: vision-language models for pathology visual question answering."""

__version__ = "0.1.0"
