"""Offline tools: the stdlib-docstring corpus, BPE tokenizer training, model training, perplexity."""
