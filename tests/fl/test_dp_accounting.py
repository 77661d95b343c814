"""The differential-privacy budget: epsilon of a worker's noised updates, composed by
dp-accounting's RDP accountant, checked against the textbook RDP bound of the Gaussian
mechanism and against the same library's tighter privacy-loss-distribution accountant."""

from __future__ import annotations

import math

import pytest

from decentralml_jupyter.fl import FlError
from decentralml_jupyter.fl.privacy import DEFAULT_DELTA, dp_epsilon


def _textbook(zs, delta):
    """Gaussian RDP alpha / (2 z^2), composed by adding, converted with
    eps = rdp + log(1/delta) / (alpha - 1), best over alpha (Mironov 2017)."""
    orders = [1 + x / 10 for x in range(1, 100)] + list(range(12, 512))
    return min(sum(a / (2 * z * z) for z in zs) + math.log(1 / delta) / (a - 1) for a in orders)


@pytest.mark.parametrize("zs", [[1.0], [1.1] * 10, [0.8, 2.0, 2.0], [4.0] * 50])
def test_epsilon_is_within_the_textbook_bound_and_above_the_tightest(zs):
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant

    ours = dp_epsilon(zs, DEFAULT_DELTA)
    assert 0 < ours <= _textbook(zs, DEFAULT_DELTA) + 1e-9
    pld = pld_privacy_accountant.PLDAccountant()
    for z in zs:
        pld.compose(dp_accounting.GaussianDpEvent(z))
    tightest = pld.get_epsilon(DEFAULT_DELTA)
    assert tightest <= ours * 1.0001  # RDP is an upper bound of the exact loss
    assert ours < 1.6 * tightest  # and not a loose one


def test_more_rounds_and_less_noise_spend_more():
    assert dp_epsilon([1.0] * 4) > dp_epsilon([1.0] * 2) > dp_epsilon([1.0]) > 0
    assert dp_epsilon([0.7]) > dp_epsilon([1.5])
    assert dp_epsilon([1.0], delta=1e-7) > dp_epsilon([1.0], delta=1e-3)
    assert dp_epsilon([]) == 0.0
    assert math.isinf(dp_epsilon([1.0, 0.0]))  # a round without noise: no guarantee
    with pytest.raises(FlError, match="delta"):
        dp_epsilon([1.0], delta=0)


def test_secure_sum_survives_dropouts_and_keeps_the_dropped_update_hidden():
    """SecAgg's double masking: five clients mask with pairwise and own seeds; two drop out
    after masking. The three survivors reveal their own seeds and their seeds shared with the
    two dropped: the sum of the survivors' updates comes out exactly, while a dropped client's
    masked update, even with every pairwise seed of it revealed, stays hidden by its own."""
    import numpy as np

    from decentralml_jupyter import fl
    from decentralml_jupyter.fl.privacy import decode_fixed, encode_fixed

    rng = np.random.default_rng(0)
    ids = ["a", "b", "c", "d", "e"]
    updates = {c: [rng.normal(size=(3, 2)).astype(np.float32)] for c in ids}
    pair = fl.pairwise_seeds(ids, b"round 7")
    own = {c: fl.self_seed(c.encode() * 32, b"round 7") for c in ids}
    masked = {c: fl.mask_update(c, updates[c], pair[c], own_seed=own[c]) for c in ids}
    survivors, dropped = ["a", "c", "e"], ["b", "d"]
    reveals = {(s, d): pair[s][d] for s in survivors for d in dropped}
    total = fl.unmask_sum(
        [masked[c] for c in survivors], own_seeds={c: own[c] for c in survivors}, dropped=reveals
    )[0]
    exact = decode_fixed(sum(encode_fixed(updates[c][0]) for c in survivors))
    np.testing.assert_array_equal(total, exact)
    # without the reveals, the dropped peers' masks stay in: garbage, not the sum
    wrong = fl.unmask_sum([masked[c] for c in survivors], own_seeds={c: own[c] for c in survivors})
    assert not np.allclose(wrong[0], exact, atol=1.0)
    # the dropped "b": all its pairwise seeds known, its own seed never revealed
    known = {("b", p): pair["b"][p] for p in ids if p != "b"}
    leaked = fl.unmask_sum([masked["b"]], dropped=known)  # every pairwise mask of b removed
    assert not np.allclose(leaked[0], updates["b"][0], atol=1.0)
    # (had it masked without its own seed, that would have exposed it: the reason for it)
    bare = fl.mask_update("b", updates["b"], pair["b"])
    np.testing.assert_allclose(fl.unmask_sum([bare], dropped=known)[0], updates["b"][0], atol=1e-6)
