"""Training a byte-level BPE tokenizer with Step-3's special tokens."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from step3_trt.tokenizer import BOS, EOS, PAD, Step3Tokenizer, step3_byte_level

# The image placeholder token of Step-3's tokenizer; here it takes the last id of the vocabulary,
# so `image_token_id` never collides with a text token.
IMAGE_TOKEN = "<im_patch>"
SPECIALS = (BOS, EOS, PAD)  # ids 0, 1, 2


def train_bpe(texts: Iterable[str], vocab_size: int) -> Step3Tokenizer:
    """Byte-level BPE over `texts` with exactly `vocab_size` tokens: BOS, EOS, PAD (ids 0-2), the
    256 byte symbols, merges, and IMAGE_TOKEN as id `vocab_size - 1`. Any text is encodable.
    Step-3's chat delimiters take the ids of byte symbols UTF-8 never uses
    (`tokenizer.map_chat_tokens`); the post-processor adds BOS."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=2,
                                  special_tokens=[AddedToken(t, special=True) for t in SPECIALS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    got = tok.get_vocab_size()
    if got != vocab_size - 1:
        raise ValueError(f"the corpus supports only {got + 1} tokens, fewer than vocab_size "
                         f"{vocab_size}; use a smaller vocabulary")
    tok.add_special_tokens([AddedToken(IMAGE_TOKEN, special=True)])
    for i, t in enumerate((*SPECIALS, IMAGE_TOKEN)):
        expected = i if t != IMAGE_TOKEN else vocab_size - 1
        assert tok.token_to_id(t) == expected, (t, tok.token_to_id(t), expected)
    return step3_byte_level(tok)
