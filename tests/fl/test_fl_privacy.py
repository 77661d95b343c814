"""Clipping + Gaussian noise, and secure aggregation by pairwise masks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_updates

from decentralml_jupyter.fl import (
    FedAvg,
    FlError,
    clip_and_noise,
    mask_update,
    pairwise_seeds,
    secure_fedavg,
    unmask_sum,
)
from decentralml_jupyter.fl.checks import delta_norm
from decentralml_jupyter.fl.privacy import FRAC_BITS, decode_fixed, encode_fixed
from tests.conftest import require


def test_clipping_bounds_the_delta_and_records_parameters():
    rng = np.random.default_rng(0)
    g = [rng.normal(size=(10, 5)).astype(np.float32), rng.normal(size=(5,)).astype(np.float32)]
    w = [x + rng.normal(size=x.shape).astype(np.float32) * 3 for x in g]
    before = delta_norm(g, w)
    out, rec = clip_and_noise(g, w, clip_norm=1.0, noise_multiplier=0.0, seed=1)
    assert delta_norm(g, out) == pytest.approx(1.0, rel=1e-5)
    assert rec.clipped and rec.delta_norm == pytest.approx(before) and rec.clip_norm == 1.0
    # Direction is kept: clipped delta is parallel to the original one.
    d0 = np.concatenate([(b - a).ravel() for a, b in zip(g, w, strict=True)])
    d1 = np.concatenate([(b - a).ravel() for a, b in zip(g, out, strict=True)])
    cos = d0 @ d1 / np.linalg.norm(d0) / np.linalg.norm(d1)
    assert cos > 0.9999
    # A small delta is left unclipped.
    small = [x + 1e-3 for x in g]
    out2, rec2 = clip_and_noise(g, small, clip_norm=1.0, noise_multiplier=0.0, seed=1)
    assert not rec2.clipped
    np.testing.assert_allclose(out2[0], small[0], atol=1e-6)


def test_noise_has_the_declared_scale_and_is_seeded():
    g = [np.zeros((200, 100), np.float32)]
    w = [np.zeros((200, 100), np.float32)]
    a, rec = clip_and_noise(g, w, clip_norm=0.5, noise_multiplier=2.0, seed=7)
    b, _ = clip_and_noise(g, w, clip_norm=0.5, noise_multiplier=2.0, seed=7)
    c, _ = clip_and_noise(g, w, clip_norm=0.5, noise_multiplier=2.0, seed=8)
    assert np.std(a[0]) == pytest.approx(1.0, rel=0.03)  # sigma = z * C = 1.0
    assert abs(np.mean(a[0])) < 0.02
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    assert (rec.noise_multiplier, rec.seed, a[0].dtype) == (2.0, 7, np.float32)
    with pytest.raises(FlError):
        clip_and_noise(g, w, clip_norm=0.0, noise_multiplier=1.0, seed=0)


def test_fixed_point_round_trip():
    v = np.array([-3.25, 0.0, 1e-7, 12345.678, -0.5])
    back = decode_fixed(encode_fixed(v))
    assert np.max(np.abs(back - v)) <= 2.0 ** -(FRAC_BITS + 1)
    with pytest.raises(FlError):
        encode_fixed(np.array([1e30]))


def test_masked_sum_equals_plain_sum():
    ups = make_updates(6, seed=4)
    ids = [u.client_id for u in ups]
    seeds = pairwise_seeds(ids, b"round-1")
    masked = [mask_update(u.client_id, u.weights, seeds[u.client_id]) for u in ups]
    total = unmask_sum(masked)
    for i, layer in enumerate(total):
        plain = np.sum([u.weights[i].astype(np.float64) for u in ups], axis=0)
        # Each client's encoding rounds by at most 2^-(f+1); the masks cancel exactly.
        assert np.max(np.abs(layer - plain)) <= len(ups) * 2.0 ** -(FRAC_BITS + 1)


def test_secure_fedavg_matches_fedavg():
    ups = make_updates(5, seed=9)
    g = [np.zeros_like(w) for w in ups[0].weights]
    seeds = pairwise_seeds([u.client_id for u in ups], b"r7")
    masked = [
        mask_update(u.client_id, u.weights, seeds[u.client_id], weight=u.num_examples)
        for u in reversed(ups)
    ]
    for a, b in zip(secure_fedavg(g, masked), FedAvg().aggregate(g, ups), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
        assert a.dtype == b.dtype


def test_single_masked_update_reveals_nothing_obvious():
    ups = make_updates(4, seed=1)
    seeds = pairwise_seeds([u.client_id for u in ups], b"s")
    masked = mask_update(ups[0].client_id, ups[0].weights, seeds[ups[0].client_id])
    plain = np.concatenate([w.ravel().astype(np.float64) for w in ups[0].weights])
    seen = np.concatenate([decode_fixed(m).ravel() for m in masked.layers])
    # Decoded alone, the masked update is noise spanning the whole fixed-point range.
    assert np.median(np.abs(seen - plain)) > 1e8
    assert abs(np.corrcoef(seen, plain)[0, 1]) < 0.5
    # Its raw words look uniform: about half of all bits set.
    bits = np.unpackbits(np.concatenate([m.ravel() for m in masked.layers]).view(np.uint8))
    assert 0.45 < bits.mean() < 0.55


def test_missing_client_leaves_masks_in_the_sum():
    ups = make_updates(4, seed=2)
    seeds = pairwise_seeds([u.client_id for u in ups], b"s")
    masked = [mask_update(u.client_id, u.weights, seeds[u.client_id]) for u in ups[:3]]
    plain = np.sum([u.weights[0] for u in ups[:3]], axis=0)
    assert np.median(np.abs(unmask_sum(masked)[0] - plain)) > 1e8


def test_x25519_seeds_agree_between_the_two_clients():
    require("nacl")
    from nacl.public import PrivateKey

    from decentralml_jupyter.fl.privacy import x25519_shared_seed

    a, b, c = PrivateKey.generate(), PrivateKey.generate(), PrivateKey.generate()
    ab = x25519_shared_seed(bytes(a), bytes(b.public_key), b"model/1/round/3")
    ba = x25519_shared_seed(bytes(b), bytes(a.public_key), b"model/1/round/3")
    ac = x25519_shared_seed(bytes(a), bytes(c.public_key), b"model/1/round/3")
    other_round = x25519_shared_seed(bytes(a), bytes(b.public_key), b"model/1/round/4")
    assert ab == ba and ab != ac and ab != other_round
