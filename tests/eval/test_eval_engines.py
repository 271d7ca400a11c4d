"""`step3-trt eval` end to end: fp32 engines against their own checkpoint and against another."""

import json

import pytest

from step3_trt.cli.eval_cmd import evaluate_engines
from step3_trt.cli.main import main
from step3_trt.make_checkpoint import make_random_checkpoint
from tests.conftest import REPO
from tests.sizes import ODD_SIZES

HELDOUT = REPO / "data" / "heldout.txt"
FAST = ("--seq-len", "32", "--max-tokens", "128")  # 4 windows, one engine step


@pytest.fixture(scope="module")
def other_seed(tmp_path_factory):
    """Same architecture as the engines' checkpoint, other random weights."""
    return make_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "other", seed=3,
                                  overrides=ODD_SIZES)


def eval_cli(capsys, *args):
    code = main(["eval", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_engines_agree_with_their_own_checkpoint(engines_1a1f, odd_checkpoint):
    report = evaluate_engines(engines_1a1f[1], odd_checkpoint, HELDOUT, max_tokens=128,
                              seq_len=32)
    r = report.result
    assert (r.tokens, report.windows) == (128, 4) and report.digest_match
    # float32 on both sides: the engines' logits differ from the reference's only by summation
    # order (~1e-6 relative). KL grows with the square of that difference (~1e-12) and the log
    # perplexity ratio with its mean (~1e-6), so 1e-6 and 1e-4 leave wide margins, while a real
    # error (a wrong position, layer or weight) moves logits by 1e-2 or more.
    assert r.top1_agreement == 1.0
    assert 0 <= r.mean_kl < 1e-6
    assert abs(r.ppl_ratio - 1) < 1e-4


def test_other_weights_are_clearly_worse_and_fail_the_gates(engines_1a1f, other_seed, capsys):
    code, out, err = eval_cli(capsys, "--engines", engines_1a1f[1], "--reference", other_seed,
                              "--data", HELDOUT, *FAST, "--json", "--min-top1", "0.9",
                              "--max-kl", "1e-3")
    report = json.loads(out)
    assert code == 1
    assert report["tokens"] == 128
    assert report["top1_agreement"] < 0.5 and report["mean_kl"] > 1e-2
    assert "FAILED: top-1 agreement" in err and "FAILED: mean KL" in err
    assert len(report["failures"]) == 2


def test_gates_pass_with_exit_0_and_a_table(engines_1a1f, odd_checkpoint, capsys):
    code, out, err = eval_cli(capsys, "--engines", engines_1a1f[1], "--reference", odd_checkpoint,
                              "--data", HELDOUT, *FAST, "--min-top1", "0.999", "--max-kl", "1e-6",
                              "--max-ppl-ratio", "1.0001")
    assert code == 0 and "FAILED" not in err
    assert "same config and layout as the engines' source" in out
    assert "tokens scored             128" in out and "top-1 agreement           1.0000" in out


def test_jsonl_data_is_scored_like_the_same_text(engines_1a1f, odd_checkpoint, tmp_path):
    text = HELDOUT.read_text()[:2000]
    plain, jsonl = tmp_path / "a.txt", tmp_path / "a.jsonl"
    plain.write_text(text)
    jsonl.write_text(json.dumps({"text": text, "id": 1}) + "\n\n")
    a = evaluate_engines(engines_1a1f[1], odd_checkpoint, plain, max_tokens=64, seq_len=32)
    b = evaluate_engines(engines_1a1f[1], odd_checkpoint, jsonl, max_tokens=64, seq_len=32)
    assert a.result == b.result


def test_different_architecture_is_an_error(engines_1a1f, tiny_checkpoint, capsys):
    code, _, err = eval_cli(capsys, "--engines", engines_1a1f[1], "--reference", tiny_checkpoint,
                            "--data", HELDOUT, *FAST)
    assert code == 2
    assert "engines and reference are different models" in err
    assert "hidden_size 72 (engines) vs 96 (reference)" in err and "Traceback" not in err


@pytest.mark.parametrize("content, args, message", [
    (None, (), "does not exist"),
    ("", (), "is empty"),
    ("  \n\n", (), "is empty"),
    ("short text", (), "10 tokens, fewer than one window of --seq-len 32"),
    ('{"text": "a"}\n{"txt": "b"}\n', (), 'line 2: expected an object with a string "text"'),
    ("{not json\n", (), "line 1: not valid JSON"),
    ("x" * 100, ("--max-tokens", "16"), "--max-tokens 16 is less than one window"),
    ("x" * 1100, ("--seq-len", "1024"),
     "--seq-len 1024 must be less than the engines' maximum sequence length 1024"),
])
def test_bad_data_is_a_one_line_error(engines_1a1f, odd_checkpoint, tmp_path, capsys, content,
                                      args, message):
    data = tmp_path / ("data.jsonl" if content and content.startswith("{") else "data.txt")
    if content is not None:
        data.write_text(content)
    code, _, err = eval_cli(capsys, "--engines", engines_1a1f[1], "--reference", odd_checkpoint,
                            "--data", data, "--seq-len", "32", *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_missing_engines_or_reference_is_a_one_line_error(engines_1a1f, odd_checkpoint, tmp_path,
                                                          capsys):
    missing = tmp_path / "missing"
    for engines, reference, message in ((missing, odd_checkpoint, "not a step3-trt-engines"),
                                        (engines_1a1f[1], missing, "does not exist")):
        code, _, err = eval_cli(capsys, "--engines", engines, "--reference", reference,
                                "--data", HELDOUT, *FAST)
        assert code == 2
        assert message in err and len(err.strip().splitlines()) == 1
