"""The tokenizer against `transformers.AutoTokenizer` on the same files: the bundled tokenizer,
a DeepSeek-V3-style configuration (BOS through the post-processor), one without a
post-processor; special tokens kept or dropped in decoding; the chat delimiters' ids."""

from __future__ import annotations

import json
import random
import shutil

import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from step3_trt.chat.tokens import CHAT_TOKENS, END_OF_TURN, THINK_END
from step3_trt.tokenizer import BOS, EOS, PAD, Step3Tokenizer, map_chat_tokens
from tests.conftest import REPO

transformers = pytest.importorskip("transformers")

BUNDLED = REPO / "models" / "step3-tiny"
HELDOUT = (REPO / "data" / "heldout.txt").read_text(encoding="utf-8")
EDGE_CASES = [
    "", " ", "  \n\n\t ", "Return a new list", "x = 12345678 + 0.5e-3", "naïve café — “quotes”",
    "中文和日本語のテキスト、カタカナ", "emoji 🙂👍🏽 and ZWJ 👩‍👩‍👧", "tabs\tand\r\nCRLF",
    f"{BOS}inline specials{EOS}{PAD}", f"<|BOT|>user\nhi{END_OF_TURN}<think>\nr{THINK_END}a",
    "<｜tool_calls_begin｜><｜tool_call_begin｜>function<｜tool_sep｜>"
    '<steptml:invoke name="f"><steptml:parameter name="k">v</steptml:parameter></steptml:invoke>'
    "<｜tool_call_end｜><｜tool_calls_end｜>", "<|EOT", "</thi", "<im_patch> image",
    "ÀÁõ÷ÿ (Latin-1 letters are two UTF-8 bytes each)",
]
# DeepSeek-V3's pre-tokenizer (its tokenizer.json): digits in runs of up to 3, CJK runs, then
# a letter/punctuation/space split, then byte-level symbols without GPT-2's regex.
DEEPSEEK_V3_PRE_TOKENIZER = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": r"\p{N}{1,3}"}, "behavior": "Isolated",
     "invert": False},
    {"type": "Split", "pattern": {"Regex": "[一-龥぀-ゟ゠-ヿ]+"}, "behavior": "Isolated",
     "invert": False},
    {"type": "Split", "pattern": {"Regex": "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
                                           "|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
                                           "| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+"
                                           "|\\s+(?!\\S)|\\s+"},
     "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}


def texts() -> list[str]:
    docs = [d for d in HELDOUT.split("\n\n") if d.strip()]
    return EDGE_CASES + docs[:300]


def hf(path):
    return transformers.AutoTokenizer.from_pretrained(str(path))


def assert_same_as_transformers(path, expect_bos: bool):
    ours, theirs = Step3Tokenizer.from_dir(path), hf(path)
    for text in texts():
        ids, bare = ours.encode(text), ours.encode(text, add_special_tokens=False)
        assert ids == theirs(text)["input_ids"], text
        assert bare == theirs(text, add_special_tokens=False)["input_ids"], text
        assert ids == ([ours.bos_token_id] if expect_bos else []) + bare, text
    rng = random.Random(0)
    n = theirs.vocab_size
    special = [ours.token_id(t) for t, _ in CHAT_TOKENS] + [ours.bos_token_id, ours.eos_token_id]
    for _ in range(300):
        ids = [rng.randrange(n) for _ in range(rng.randrange(1, 40))]
        ids += rng.sample([i for i in special if i is not None], 2)
        rng.shuffle(ids)
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == \
                theirs.decode(ids, skip_special_tokens=skip), (ids, skip)
    named = {k: v for k, v in theirs.special_tokens_map.items()}
    assert ours.special_tokens == named


def test_bundled_tokenizer_is_transformers(tmp_path):
    assert_same_as_transformers(BUNDLED, expect_bos=True)


def deepseek_v3_style(tmp_path):
    """The bundled vocabulary with DeepSeek-V3's tokenizer.json pieces (pre-tokenizer, BOS
    post-processor) and tokenizer_config.json conventions (LlamaTokenizerFast, AddedToken
    dicts, add_bos_token, no added_tokens_decoder, a chat template)."""
    out = tmp_path / "dsv3"
    out.mkdir()
    spec = json.loads((BUNDLED / "tokenizer.json").read_text(encoding="utf-8"))
    spec["pre_tokenizer"] = DEEPSEEK_V3_PRE_TOKENIZER
    bos = {"id": BOS, "type_id": 0}
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": bos}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": bos}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": BOS, "type_id": 1}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {BOS: {"id": BOS, "ids": [0], "tokens": [BOS]}}}
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")

    def added(content):
        return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
                "rstrip": False, "single_word": False}
    config = {"add_bos_token": True, "add_eos_token": False, "bos_token": added(BOS),
              "clean_up_tokenization_spaces": False, "eos_token": added(EOS), "legacy": True,
              "model_max_length": 131072, "pad_token": added(EOS), "sp_model_kwargs": {},
              "unk_token": None, "tokenizer_class": "LlamaTokenizerFast",
              "chat_template": "{{ bos_token }}{% for m in messages %}{{ m['content'] }}"
                               "{% endfor %}"}
    (out / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return out


def test_deepseek_v3_style_tokenizer_is_transformers(tmp_path):
    path = deepseek_v3_style(tmp_path)
    assert_same_as_transformers(path, expect_bos=True)
    ours = Step3Tokenizer.from_dir(path)
    assert ours.special_tokens["pad_token"] == EOS  # AddedToken dicts read as their content
    assert ours.encode("12345") == [0, *ours.encode("123", False), *ours.encode("45", False)]


def test_no_post_processor_means_no_bos_even_with_add_bos_token(tmp_path):
    """transformers ignores tokenizer_config.json's add_bos_token when tokenizer.json exists;
    without a post-processor nothing is added (the issue's example)."""
    out = tmp_path / "plain"
    shutil.copytree(BUNDLED, out, ignore=shutil.ignore_patterns("*.safetensors*"))
    spec = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    spec["post_processor"] = None
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    assert json.loads((out / "tokenizer_config.json").read_text())["add_bos_token"] is True
    assert_same_as_transformers(out, expect_bos=False)
    (out / "tokenizer_config.json").unlink()  # no config at all: still no BOS, no named tokens
    assert Step3Tokenizer.from_dir(out).encode("a b") == hf(out)("a b")["input_ids"]


def test_special_tokens_map_takes_precedence_without_added_tokens_decoder(tmp_path):
    out = tmp_path / "legacy"
    shutil.copytree(BUNDLED, out, ignore=shutil.ignore_patterns("*.safetensors*"))
    (out / "special_tokens_map.json").write_text(json.dumps({"eos_token": PAD}))
    assert Step3Tokenizer.from_dir(out).eos_token == PAD == hf(out).eos_token
    config = json.loads((out / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {"1": {"content": EOS, "special": True}}
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    assert Step3Tokenizer.from_dir(out).eos_token == EOS == hf(out).eos_token


def test_decode_keeps_special_tokens_only_when_asked():
    tok = Step3Tokenizer.from_dir(BUNDLED)
    text = f"<|BOT|>assistant\n<think>\nr{THINK_END}done{END_OF_TURN}"
    ids = tok.encode(text)
    assert tok.decode(ids, skip_special_tokens=False) == BOS + text
    assert tok.decode(ids) == "assistant\n<think>\nr</think>done"  # default: unchanged behaviour


def test_chat_delimiters_are_single_tokens_of_the_bundled_vocabulary():
    tok = Step3Tokenizer.from_dir(BUNDLED)
    ids = [tok.token_id(t) for t, _ in CHAT_TOKENS]
    assert None not in ids and len(set(ids)) == len(ids)
    assert max(ids) < tok.tokenizer.get_vocab_size(with_added_tokens=False) == 4095
    assert tok.tokenizer.get_vocab_size() == 4096  # the model's vocab_size: nothing was added
    for token, tid in zip((t for t, _ in CHAT_TOKENS), ids):
        assert tok.encode(token, add_special_tokens=False) == [tid]


def _raw_bpe(texts: list[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=[AddedToken(t, special=True)
                                                  for t in (BOS, EOS, PAD)],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def test_mapping_the_delimiters_changes_no_tokenization_of_text_without_them():
    docs = texts()[len(EDGE_CASES):]
    raw = _raw_bpe(docs, 1200)
    mapped = map_chat_tokens(raw)
    assert mapped.get_vocab_size() == raw.get_vocab_size()
    plain = [t for t in texts() if not any(d in t for d, _ in CHAT_TOKENS)]
    for text in plain:
        assert mapped.encode(text).ids == raw.encode(text).ids, text
        assert mapped.decode(mapped.encode(text).ids, skip_special_tokens=False) == text
    # The delimiters' ids were byte tokens no UTF-8 text can produce.
    taken = {mapped.token_to_id(t) for t, _ in CHAT_TOKENS}
    assert not taken & {i for text in plain for i in raw.encode(text).ids}
