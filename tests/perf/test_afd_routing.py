"""Routing statistics for the runtime model: exact Plackett-Luce inclusion, the Step-3 transfer,
the sampler, and the file format (including the committed measurement)."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest

from perf.afd.checks import AfdInputError
from perf.afd.routing import (FORMAT, RoutingSampler, calibrate, inclusion, load_routing,
                              parse_routing, sample_topk, transfer_shares, uniform_routing)
from perf.afd.runtime import DEFAULT_ROUTING


def brute_inclusion(w: list[float], k: int) -> np.ndarray:
    """P(expert in the first k of a Plackett-Luce order), by enumerating ordered prefixes."""
    out = np.zeros(len(w))
    for prefix in itertools.permutations(range(len(w)), k):
        p, left = 1.0, sum(w)
        for e in prefix:
            p *= w[e] / left
            left -= w[e]
        out[list(prefix)] += p
    return out


@pytest.mark.parametrize("w,k", [([1.0, 2.0, 3.0], 2), ([0.5, 1.0, 1.5, 4.0], 2),
                                 ([1.0, 1.0, 2.0, 3.0, 5.0], 3)])
def test_inclusion_matches_enumeration(w, k):
    assert inclusion(np.asarray(w), k) == pytest.approx(brute_inclusion(w, k), abs=1e-9)


def test_inclusion_edge_cases():
    assert inclusion(np.ones(48), 3) == pytest.approx(np.full(48, 3 / 48), abs=1e-12)
    w = np.array([0.1, 0.2, 0.3, 0.4])
    assert inclusion(w, 1) == pytest.approx(w, abs=1e-12)  # top-1 = first draw
    assert inclusion(w, 4) == pytest.approx(np.ones(4), abs=1e-12)


def test_calibrated_weights_reach_the_target_inclusion():
    target = np.array([0.16, 0.12, 0.1, 0.1, 0.08, 0.06, 0.2, 0.18]) * 2  # sums to top_k = 2
    w = calibrate(target, 2)
    assert inclusion(w, 2) == pytest.approx(target, rel=1e-6)
    assert not np.allclose(w / w.sum(), target / 2)  # proportional weights would be flatter
    assert calibrate(np.full(6, 0.5), 3) == pytest.approx(np.full(6, 1 / 6))
    with pytest.raises(AfdInputError, match="inclusion"):
        calibrate(np.array([1.0, 1.0, 0.0]), 2)


def test_transfer_keeps_the_spread_of_the_measured_shares():
    shares = np.array([0.20, 0.15, 0.125, 0.125, 0.1, 0.1, 0.1, 0.1])
    out = transfer_shares(shares, 48)
    assert out.sum() == pytest.approx(1.0)
    assert out[:6] == pytest.approx(np.full(6, 0.20 / 6))  # each measured expert -> 6 experts
    assert out.max() * 48 == pytest.approx(shares.max() * 8)  # max/mean kept
    assert transfer_shares(np.full(8, 1 / 8), 48) == pytest.approx(np.full(48, 1 / 48))


def test_sample_topk_rows_are_distinct_and_follow_the_weights():
    rng = np.random.default_rng(0)
    w = np.array([0.5, 0.25, 0.125, 0.125])
    ids = sample_topk(w, 40000, 2, rng)
    assert ids.shape == (40000, 2) and np.all(ids[:, 0] != ids[:, 1])
    top1 = np.bincount(ids[:, 0], minlength=4) / 40000
    assert top1 == pytest.approx(w, abs=0.01)  # the first column is the top-1 draw
    inc = np.bincount(ids.ravel(), minlength=4) / 40000
    assert inc == pytest.approx(brute_inclusion(list(w), 2), abs=0.01)


def test_sampler_is_deterministic_and_places_each_layer_differently():
    stats = load_routing(DEFAULT_ROUTING)
    a = RoutingSampler(stats, 48, 3, layers=4, pool=4096).draws(256, 2)
    b = RoutingSampler(stats, 48, 3, layers=4, pool=4096).draws(256, 2)
    assert a.shape == (8, 256, 3) and np.array_equal(a, b)
    counts = [np.bincount(a[2 * i].ravel(), minlength=48) for i in range(4)]
    assert not all(np.array_equal(np.argsort(counts[0]), np.argsort(c)) for c in counts[1:])
    uni = RoutingSampler(uniform_routing(48, 3), 48, 3, pool=8192).draws(8192, 1)
    share = np.bincount(uni.ravel(), minlength=48) / uni.size
    assert share == pytest.approx(np.full(48, 1 / 48), rel=0.1)


def test_committed_measurement_loads_and_says_what_it_measured():
    stats = load_routing(DEFAULT_ROUTING)
    assert (stats.experts, stats.top_k, len(stats.layers)) == (8, 2, 4)
    assert stats.tokens > 30000
    assert all(1.0 < m < 2.0 for m in stats.max_over_mean())  # balanced-ish, not uniform


def valid() -> dict:
    return {"format": FORMAT, "experts": 4, "top_k": 2, "tokens": 10,
            "layers": [{"layer": 1, "inclusion": [0.5, 0.5, 0.5, 0.5],
                        "top1": [0.25, 0.25, 0.25, 0.25]}]}


@pytest.mark.parametrize("edit,message", [
    (lambda r: r.update(format="x/1"), "format must be"),
    (lambda r: r.update(top_k=5), "top_k"),
    (lambda r: r.update(experts=0), "experts"),
    (lambda r: r.update(layers=[]), "layers"),
    (lambda r: r["layers"][0].update(inclusion=[0.5, 0.5, 0.5]), "must list 4"),
    (lambda r: r["layers"][0].update(inclusion=[0.5, 0.5, 0.5, 0.4]), "sum to 2"),
    (lambda r: r["layers"][0].update(top1=[0.7, 0.1, 0.1, 0.1]), "top1 exceeds"),
    (lambda r: r["layers"][0].update(layer=-1), "layer"),
])
def test_bad_routing_files_are_refused_naming_the_field(edit, message):
    raw = copy.deepcopy(valid())
    edit(raw)
    with pytest.raises(AfdInputError, match=message):
        parse_routing(raw, "routing.json")
    assert parse_routing(valid()).layers[0].top1 == (0.25,) * 4
