"""The metric math of `step3_trt.evaluate` on cases small enough to compute by hand."""

import math

import pytest
import torch

from step3_trt.evaluate import EvalResult, LogitStats, Thresholds, compare_logits, eval_windows

LN2, LN3 = math.log(2), math.log(3)


def test_identical_logits_agree_fully_with_zero_kl_and_ratio_one():
    logits = torch.randn(7, 11, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 3, 10, 5, 5, 1, 2])
    stats = compare_logits(logits, logits.clone(), targets)
    result = EvalResult.from_stats(stats)
    assert stats.tokens == 7 and stats.top1_agree == 7
    assert stats.kl_sum == 0.0
    assert result.top1_agreement == 1.0 and result.ppl_ratio == 1.0
    assert result.ppl_reference == result.ppl_engine


def test_two_tokens_by_hand():
    # token 1: p = (2/3, 1/3), q = (1/3, 2/3), target 0: argmaxes differ,
    #   KL = 2/3 ln 2 + 1/3 ln 1/2 = ln2 / 3, nll_ref = ln 3/2, nll_eng = ln 3
    # token 2: p = q = (1/4, 3/4), target 1: agree, KL = 0, nll = ln 4/3 on both sides
    ref = torch.tensor([[LN2, 0.0], [0.0, LN3]])
    eng = torch.tensor([[0.0, LN2], [0.0, LN3]])
    stats = compare_logits(ref, eng, torch.tensor([0, 1]))
    assert stats.tokens == 2 and stats.top1_agree == 1
    assert stats.kl_sum == pytest.approx(LN2 / 3, rel=1e-6)
    assert stats.nll_reference == pytest.approx(math.log(1.5) + math.log(4 / 3), rel=1e-6)
    assert stats.nll_engine == pytest.approx(LN3 + math.log(4 / 3), rel=1e-6)
    result = EvalResult.from_stats(stats)
    assert result.top1_agreement == 0.5
    assert result.mean_kl == pytest.approx(LN2 / 6, rel=1e-6)
    assert result.ppl_reference == pytest.approx(math.sqrt(2), rel=1e-6)  # exp(ln(2) / 2)
    assert result.ppl_engine == pytest.approx(2.0, rel=1e-6)  # exp(ln(4) / 2)
    assert result.ppl_ratio == pytest.approx(math.sqrt(2), rel=1e-6)


def test_kl_is_reference_to_engine_not_the_reverse():
    p, q = torch.tensor([[0.9, 0.1]]), torch.tensor([[0.5, 0.5]])
    stats = compare_logits(p.log(), q.log(), torch.tensor([0]))
    forward = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)  # 0.368
    backward = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # 0.511
    assert stats.kl_sum == pytest.approx(forward, rel=1e-6)
    assert abs(stats.kl_sum - backward) > 0.1


def test_logits_are_normalised_in_float64():
    # a constant shift is invisible after log-softmax; large logits must not lose the small
    # difference between the two sides, as they would if the softmax ran in float32
    base = torch.tensor([[3e4, 3e4 - 1.0, 3e4 - 2.0]], dtype=torch.float64)
    eng = base + torch.tensor([[0.0, 1e-3, 0.0]], dtype=torch.float64)
    stats = compare_logits(base, eng, torch.tensor([2]))
    shifted = compare_logits(base - 3e4, eng - 3e4, torch.tensor([2]))
    assert stats.kl_sum > 0 and stats.kl_sum == pytest.approx(shifted.kl_sum, rel=1e-9)
    assert stats.nll_reference == pytest.approx(shifted.nll_reference, rel=1e-12)


def test_partial_sums_add_up_to_the_whole():
    g = torch.Generator().manual_seed(1)
    ref, eng = torch.randn(10, 6, generator=g), torch.randn(10, 6, generator=g)
    targets = torch.randint(0, 6, (10,), generator=g)
    whole = compare_logits(ref, eng, targets)
    parts = compare_logits(ref[:4], eng[:4], targets[:4]) + \
        compare_logits(ref[4:], eng[4:], targets[4:])
    assert parts.tokens == whole.tokens and parts.top1_agree == whole.top1_agree
    for field in ("kl_sum", "nll_reference", "nll_engine"):
        assert getattr(parts, field) == pytest.approx(getattr(whole, field), rel=1e-12)
    assert LogitStats() + whole == whole


def test_mismatched_shapes_and_nothing_scored_are_errors():
    with pytest.raises(ValueError, match="logits must both be"):
        compare_logits(torch.zeros(2, 5), torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="targets must be"):
        compare_logits(torch.zeros(2, 5), torch.zeros(2, 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="no tokens"):
        EvalResult.from_stats(LogitStats())


RESULT = EvalResult(tokens=100, top1_agreement=0.97, mean_kl=0.02, ppl_reference=10.0,
                    ppl_engine=10.3, ppl_ratio=1.03)


def test_thresholds_name_each_failed_metric():
    assert Thresholds().failures(RESULT) == []
    assert Thresholds(min_top1=0.97, max_kl=0.02, max_ppl_ratio=1.03).failures(RESULT) == []
    failed = Thresholds(min_top1=0.98, max_kl=0.01, max_ppl_ratio=1.01).failures(RESULT)
    assert len(failed) == 3
    assert "top-1 agreement 0.9700" in failed[0] and "--min-top1 0.98" in failed[0]
    assert "mean KL" in failed[1] and "--max-kl 0.01" in failed[1]
    assert "perplexity ratio 1.030000" in failed[2] and "--max-ppl-ratio 1.01" in failed[2]


def test_nan_metrics_fail_every_gate():
    nan = EvalResult(100, math.nan, math.nan, 10.0, math.nan, math.nan)
    assert len(Thresholds(min_top1=0.0, max_kl=1e9, max_ppl_ratio=1e9).failures(nan)) == 3


def test_windows_are_bos_framed_whole_and_capped():
    ids = list(range(10, 21))  # 11 tokens
    inputs, targets = eval_windows(ids, seq_len=4, max_tokens=100, bos_id=1)
    assert targets.tolist() == [[10, 11, 12, 13], [14, 15, 16, 17]]  # the 3-token tail is dropped
    assert inputs.tolist() == [[1, 10, 11, 12], [1, 14, 15, 16]]
    inputs, targets = eval_windows(ids, seq_len=4, max_tokens=7, bos_id=1)
    assert targets.tolist() == [[10, 11, 12, 13]]


@pytest.mark.parametrize("n, seq_len, max_tokens, message", [
    (3, 4, 100, "3 tokens, fewer than one window of --seq-len 4"),
    (10, 4, 3, "--max-tokens 3 is less than one window"),
    (10, 0, 3, "--seq-len must be at least 1"),
])
def test_window_errors(n, seq_len, max_tokens, message):
    with pytest.raises(ValueError, match=message):
        eval_windows(list(range(n)), seq_len, max_tokens, bos_id=1)
