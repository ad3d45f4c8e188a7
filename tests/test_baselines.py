"""The non-learned selectors: each rule on hand-made states, and their standing on a planted cache."""
import numpy as np
import pytest
import torch

from agents.base import States, selector_class
from agents.baselines import coarse_to_fine_order, evenly_spaced
from agents.synthetic import planted_states
from data.errors import InputError, UnknownNameError

BASELINES = ["uniform", "random", "constant", "max_response", "entropy", "motion", "fixed_order", "oracle"]


def _states(V=3, T=10, K=2, D=4, C=5, seed=0, motion=True):
    g = torch.Generator().manual_seed(seed)
    return States(features=torch.randn(V, T, K, D, generator=g), logits=torch.randn(V, T, K, C, generator=g),
                  labels=torch.arange(V) % C, motion=torch.rand(V, T, generator=g) if motion else None)


def _top1(sel, st):
    return float((sel.video_scores.argmax(1) == st.labels).float().mean())


@pytest.fixture(scope="module")
def planted():
    return planted_states(V=256, T=25, K=2, D=16, C=8, seed=3)


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("mode", ["frame", "region"])
def test_every_baseline_keeps_m(name, mode):
    st = _states()
    sel = selector_class(name)()
    scores = sel.score(st)
    assert scores.shape == (3, 10, 2) and scores.dtype == torch.float32
    out = sel.select(st, 4, mode=mode)
    assert out.keep.shape == (3, 10, 2) and out.video_scores.shape == (3, 5)
    expected = 4 if mode == "frame" else 8
    assert out.num_kept.tolist() == [expected] * 3
    dense = sel.select(st, None) if not sel.variable_m else None
    if dense is not None:
        assert dense.keep.all()
        torch.testing.assert_close(dense.video_scores, st.logits.mean(dim=(1, 2)))


def test_registry_miss_lists_names():
    with pytest.raises(UnknownNameError, match="uniform"):
        selector_class("unifrom")


def test_uniform_is_tsn_evenly_spaced():
    assert evenly_spaced(25, 5).tolist() == [2, 7, 12, 17, 22]
    assert evenly_spaced(25, 25).tolist() == list(range(25))
    assert evenly_spaced(10, 3).tolist() == [1, 5, 8]
    st = _states(T=25)
    keep = selector_class("uniform")().select(st, 5).keep
    assert torch.nonzero(keep[1, :, 0]).flatten().tolist() == [2, 7, 12, 17, 22]
    assert keep[:, :, 0].eq(keep[:, :, 1]).all()
    with pytest.raises(InputError):
        selector_class("uniform")().select(st, 0)


def test_random_is_seeded_and_uniform_over_positions():
    st = _states(V=2000, T=10, K=1, C=3)
    a = selector_class("random")(seed=1).select(st, 3).keep
    assert torch.equal(a, selector_class("random")(seed=1).select(st, 3).keep)
    assert not torch.equal(a, selector_class("random")(seed=2).select(st, 3).keep)
    freq = a[:, :, 0].float().mean(0)
    assert torch.allclose(freq, torch.full((10,), 0.3), atol=0.05)


def test_constant_keeps_a_variable_number_with_probability_p():
    st = _states(V=2000, T=10, K=2, C=3)
    sel = selector_class("constant")(p=0.3, seed=4)
    assert sel.variable_m
    out = sel.select(st, None)
    # E[kept fraction] = p + P(empty draw)·(1 − p) = 0.3 + 0.7**11 (empty falls back to all)
    assert abs(float(out.keep.float().mean()) - (0.3 + 0.7 ** 11)) < 0.015
    assert out.num_kept.unique().numel() > 3
    assert out.keep.any(dim=(1, 2)).all()            # an empty draw falls back to everything
    assert torch.equal(sel.select(st, 3).keep, selector_class("random")(seed=4).select(st, 3).keep)
    with pytest.raises(InputError):
        selector_class("constant")(p=0.0)


def test_max_response_and_entropy_order():
    logits = torch.zeros(1, 3, 1, 3)
    logits[0, 0, 0] = torch.tensor([5.0, 0.0, 0.0])   # confident
    logits[0, 1, 0] = torch.tensor([0.0, 0.0, 0.0])   # flat: max entropy
    logits[0, 2, 0] = torch.tensor([2.0, 1.9, 0.0])   # torn between two
    st = States(features=torch.zeros(1, 3, 1, 2), logits=logits, labels=torch.tensor([0]))
    mr = selector_class("max_response")().score(st)[0, :, 0]
    assert mr.argsort(descending=True).tolist() == [0, 2, 1]
    torch.testing.assert_close(mr[1], torch.tensor(1 / 3))
    ent = selector_class("entropy")().score(st)[0, :, 0]
    assert ent.argsort(descending=True).tolist() == [0, 2, 1]
    torch.testing.assert_close(ent[1], torch.tensor(-np.log(3.0), dtype=torch.float32))


def test_motion_picks_most_motion_and_needs_it():
    st = _states(V=2, T=6, K=3)
    st.motion = torch.tensor([[0, 5, 1, 4, 2, 3], [9, 0, 0, 0, 0, 8]], dtype=torch.float32)
    keep = selector_class("motion")().select(st, 2).keep[:, :, 0]
    assert torch.nonzero(keep[0]).flatten().tolist() == [1, 3]
    assert torch.nonzero(keep[1]).flatten().tolist() == [0, 5]
    with pytest.raises(InputError, match="motion"):
        selector_class("motion")().score(_states(motion=False))


def test_fixed_order_is_coarse_to_fine_and_video_independent():
    assert coarse_to_fine_order(8) == [4, 2, 6, 1, 3, 5, 7, 0]
    assert coarse_to_fine_order(25)[:3] == [12, 6, 18]
    for T in range(1, 41):
        assert sorted(coarse_to_fine_order(T)) == list(range(T))
    a, b = _states(seed=0), _states(seed=1)
    sa, sb = selector_class("fixed_order")().score(a), selector_class("fixed_order")().score(b)
    assert torch.equal(sa, sb) and torch.equal(sa[0], sa[2])
    keep = selector_class("fixed_order")().select(a, 3).keep[0, :, 0]
    assert torch.nonzero(keep).flatten().tolist() == sorted(coarse_to_fine_order(10)[:3])


def test_oracle_scores_true_class_prob_single_and_multilabel():
    st = _states(V=2, T=4, K=1, C=3)
    torch.testing.assert_close(selector_class("oracle")().score(st),
                               torch.stack([st.probs[0, :, :, 0], st.probs[1, :, :, 1]]))
    multi = States(features=st.features, logits=st.logits, multilabel=True,
                   labels=torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.float32))
    want = torch.stack([st.probs[0, :, :, [0, 2]].max(-1).values, st.probs[1, :, :, 1]])
    torch.testing.assert_close(selector_class("oracle")().score(multi), want)


def test_planted_cache_separates_oracle_from_trivial_baselines(planted):
    acc = {n: _top1(selector_class(n)().select(planted, 5), planted) for n in BASELINES}
    assert acc["oracle"] > 0.95
    for name in ("uniform", "random", "constant", "max_response", "entropy", "motion", "fixed_order"):
        assert acc[name] < 0.35, (name, acc)
    assert _top1(selector_class("uniform")().select(planted, None), planted) < 0.1


def _first_m_by_rule(row, m):
    """The tie rule in plain Python: highest score first, equal scores by lowest position."""
    return set(sorted(range(len(row)), key=lambda t: (-row[t], t))[:m])


@pytest.mark.parametrize("T", [25, 257])
@pytest.mark.parametrize("mode", ["frame", "region"])
def test_top_m_mask_breaks_ties_by_lowest_position(T, mode):
    # torch.topk gives no order among equal values (on CPU it keeps positions 15-18 of a
    # constant 25-long score for m=4); the mask must not depend on it.
    from agents.base import top_m_mask

    zeros = torch.zeros(2, T, 3)
    for m in (1, 4, T // 3):
        keep = top_m_mask(zeros, m, mode)
        assert keep[:, :m].all() and not keep[:, m:].any()
    g = torch.Generator().manual_seed(T)
    scores = torch.randint(0, 3, (4, T, 3), generator=g).float()      # many exact ties
    if mode == "frame":
        scores[..., 1:] = scores[..., :1]                              # crop mean = an exact tie value
    for m in (1, 4, 8, T // 2):
        keep = top_m_mask(scores, m, mode)
        for v in range(4):
            for k in range(3):
                kept = set(torch.nonzero(keep[v, :, k]).flatten().tolist())
                assert kept == _first_m_by_rule(scores[v, :, k].tolist(), m), (v, k, m)


def test_key_oracle_keeps_key_positions_evenly_then_uniform():
    st = _states(V=3, T=10)
    key = torch.zeros(3, 10, dtype=torch.bool)
    key[0, 2:8] = True          # 6 key positions: m = 3 takes the 2nd, 4th, 6th (TSN centres): 3, 5, 7
    key[1, [1, 9]] = True       # 2 key positions: both, then 1 evenly spaced of the other 8
    st.key = key                # video 2: a negative, uniform's positions
    sel = selector_class("key_oracle")().select(st, 3)
    kept = sel.keep.any(2)
    assert torch.nonzero(kept[0]).flatten().tolist() == [3, 5, 7]
    assert torch.nonzero(kept[1]).flatten().tolist() == [1, 5, 9]     # outside: [0, 2..8], middle of 8 -> 5
    assert torch.nonzero(kept[2]).flatten().tolist() == evenly_spaced(10, 3).tolist()
    assert sel.num_kept.tolist() == [3, 3, 3] and bool(selector_class("key_oracle")().select(st, None).keep.all())
    with pytest.raises(InputError, match="--truth"):
        selector_class("key_oracle")().select(_states(), 3)


def test_cut_detector_finds_a_feature_jump_without_truth():
    V, T, K, D = 2, 8, 2, 6
    f = torch.zeros(V, T, K, D)
    f[:, :5, :, 0] = 1.0            # segment A: positions 0-4
    f[:, 5:, :, 1] = 1.0            # segment B: positions 5-7 (a cut between 4 and 5)
    f += 0.01 * torch.randn(V, T, K, D, generator=torch.Generator().manual_seed(0))
    st = States(features=f, logits=torch.zeros(V, T, K, 3), labels=torch.zeros(V, dtype=torch.long))
    cut = selector_class("cut")()
    assert cut.score(st).shape == (V, T, K)
    kept = cut.select(st, 2).keep.any(2)
    assert [torch.nonzero(k).flatten().tolist() for k in kept] == [[4, 5], [4, 5]]
