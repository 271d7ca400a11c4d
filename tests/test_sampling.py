import pytest
import torch

from step3_trt.sampling import SamplingParams, filter_logits, sample


def test_top_k_keeps_exactly_k():
    logits = torch.randn(50)
    kept = filter_logits(logits, SamplingParams(top_k=7)).isfinite()
    assert kept.sum() == 7
    assert set(kept.nonzero().flatten().tolist()) == set(logits.topk(7).indices.tolist())


def test_top_p_keeps_smallest_prefix_reaching_p():
    probs = torch.tensor([0.05, 0.5, 0.3, 0.15])
    kept = filter_logits(probs.log(), SamplingParams(top_p=0.7)).isfinite()
    assert kept.tolist() == [False, True, True, False]  # 0.5 < 0.7 <= 0.5 + 0.3
    kept = filter_logits(probs.log(), SamplingParams(top_p=0.5)).isfinite()
    assert kept.tolist() == [False, True, False, False]


def test_greedy_equivalents_and_temperature():
    logits = torch.randn(100)
    best = int(logits.argmax())
    for p in (SamplingParams(greedy=True), SamplingParams(temperature=0), SamplingParams(top_k=1)):
        assert sample(logits, p, p.generator()) == best
    p = SamplingParams(temperature=1e-4, seed=0)
    assert sample(logits, p, p.generator()) == best


def test_seeded_sampling_follows_the_distribution():
    probs = torch.tensor([0.1, 0.6, 0.3])
    p = SamplingParams(seed=123)
    g = p.generator()
    counts = torch.bincount(torch.tensor([sample(probs.log(), p, g) for _ in range(3000)]),
                            minlength=3) / 3000
    assert torch.allclose(counts, probs, atol=0.04)  # ~4.5 sigma for n=3000


@pytest.mark.parametrize("kwargs", [{"max_new_tokens": 0}, {"temperature": -1}, {"top_k": -2},
                                    {"top_p": 0}, {"top_p": 1.5}, {"max_new_tokens": 2.5}])
def test_bad_params(kwargs):
    with pytest.raises(ValueError):
        SamplingParams(**kwargs)


def test_a_temperature_too_small_to_represent_samples_the_top_token():
    logits = torch.tensor([3.0, 7.5, 7.4999, -2.0, float("-inf")])
    for temperature in (1e-38, 1e-45, 1e-30, 1e-7):  # 7.5 / 1e-38 overflows float32
        p = SamplingParams(temperature=temperature, seed=0)
        g = p.generator()
        assert {sample(logits, p, g) for _ in range(50)} == {1}


def test_exact_ties_at_a_tiny_temperature_are_split_between_the_tied_tokens():
    logits = torch.tensor([1.0, 5.0, 5.0, 0.0])
    p = SamplingParams(temperature=1e-38, seed=1)
    g = p.generator()
    assert {sample(logits, p, g) for _ in range(200)} == {1, 2}


def test_a_huge_temperature_is_close_to_uniform_and_finite():
    logits = torch.tensor([100.0, -100.0, 0.0])
    scaled = filter_logits(logits, SamplingParams(temperature=3e38))
    assert torch.isfinite(scaled).all() and scaled.max() == 0
    probs = scaled.softmax(-1)
    assert torch.allclose(probs, torch.full((3,), 1 / 3))


def test_nan_logits_are_never_chosen():
    logits = torch.tensor([float("nan"), 0.5, float("nan"), 0.2])
    assert sample(logits, SamplingParams(greedy=True), None) == 1  # argmax alone would pick 0
    p = SamplingParams(seed=3)
    g = p.generator()
    assert {sample(logits, p, g) for _ in range(200)} == {1, 3}


def test_infinite_logits_win_and_are_split_evenly():
    logits = torch.tensor([0.0, float("inf"), 5.0, float("inf")])
    assert sample(logits, SamplingParams(greedy=True), None) == 1
    p = SamplingParams(seed=4, top_p=0.1, top_k=3)
    g = p.generator()
    assert {sample(logits, p, g) for _ in range(200)} == {1, 3}


@pytest.mark.parametrize("fill", [float("-inf"), float("nan")])
def test_no_token_left_returns_the_first_id_instead_of_raising(fill):
    logits = torch.full((6,), fill)
    assert sample(logits, SamplingParams(greedy=True), None) == 0
    p = SamplingParams(seed=5, top_p=0.5)
    assert sample(logits, p, p.generator()) == 0


@pytest.mark.parametrize("top_k, top_p", [(0, 1e-38), (10 ** 9, 1.0), (2, 1e-9), (0, 0.9999999)])
def test_top_k_and_top_p_edges_keep_at_least_the_top_token(top_k, top_p):
    logits = torch.tensor([0.1, 2.0, -1.0, 1.9])
    kept = filter_logits(logits, SamplingParams(top_k=top_k, top_p=top_p)).isfinite()
    assert kept[1]
    if top_p < 1e-6:
        assert kept.sum() == 1


def test_bfloat16_and_half_logits_sample_like_float32():
    logits = torch.tensor([0.5, 3.0, 1.0])
    for dtype in (torch.bfloat16, torch.float16):
        assert sample(logits.to(dtype), SamplingParams(greedy=True), None) == 1
        p = SamplingParams(temperature=1e-38, seed=0)
        assert sample(logits.to(dtype), p, p.generator()) == 1


@pytest.mark.parametrize("kwargs", [{"temperature": float("inf")}, {"temperature": float("nan")},
                                    {"top_p": float("nan")}, {"seed": -1}, {"seed": 2 ** 64},
                                    {"temperature": True}])
def test_non_finite_or_out_of_range_params_are_refused(kwargs):
    with pytest.raises(ValueError):
        SamplingParams(**kwargs)


def test_the_largest_seed_works():
    p = SamplingParams(seed=2 ** 64 - 1)
    assert 0 <= sample(torch.zeros(4), p, p.generator()) < 4
