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
