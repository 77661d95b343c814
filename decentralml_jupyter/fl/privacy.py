"""Privacy: client-side clipping with Gaussian noise, and secure aggregation by pairwise masks.

Secure aggregation encodes values as fixed-point integers modulo 2^64; each pair of clients
shares a seed that expands into a mask one adds and the other subtracts, so masks cancel
exactly in the sum and validators only ever learn the sum.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from decentralml_jupyter.fl.checks import delta_norm
from decentralml_jupyter.fl.types import DpRecord, FlError, Weights

DEFAULT_DELTA = 1e-5  # the delta every reported epsilon is at, unless one is asked for


def dp_epsilon(noise_multipliers: Sequence[float], delta: float = DEFAULT_DELTA) -> float:
    """The epsilon, at ``delta``, of releasing one after another updates clipped and noised
    with these noise multipliers (each a Gaussian mechanism of sensitivity the clip norm and
    noise ``z * clip_norm``), composed by the RDP accountant of Google's ``dp-accounting``.
    Every update a worker sends in a DP round is one such release; no amplification by
    sampling is claimed (the protocol's selection of workers is public). A multiplier of 0
    (clipping without noise) gives no guarantee: infinity."""
    if not 0 < delta < 1:
        raise FlError(f"delta must be in (0, 1), got {delta}", "e.g. 1e-5")
    if not noise_multipliers:
        return 0.0
    if min(noise_multipliers) <= 0:
        return math.inf
    import dp_accounting
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    counts: dict[float, int] = {}
    for z in noise_multipliers:
        counts[float(z)] = counts.get(float(z), 0) + 1
    for z, k in sorted(counts.items()):
        accountant.compose(dp_accounting.GaussianDpEvent(z), k)
    return float(accountant.get_epsilon(delta))


# ---------------------------------------------------------------- clipping + Gaussian noise


def clip_and_noise(
    global_weights: Weights,
    weights: Weights,
    clip_norm: float,
    noise_multiplier: float,
    seed: int,
) -> tuple[Weights, DpRecord]:
    """Clip the update's delta to L2 norm ``clip_norm`` and add N(0, (z * clip_norm)^2) noise.

    Returns the privatised weights and the parameters applied, to be recorded with the update.
    The noise is drawn from a generator seeded by ``seed``; keep the seed secret from the
    server until the round is over, or the noise can be subtracted.
    """
    if clip_norm <= 0 or noise_multiplier < 0:
        raise FlError(
            f"bad DP settings: clip_norm={clip_norm}, noise_multiplier={noise_multiplier}",
            "clip_norm > 0, noise_multiplier >= 0",
        )
    norm = delta_norm(global_weights, weights)
    factor = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    rng = np.random.default_rng(seed)
    sigma = noise_multiplier * clip_norm
    out = []
    for g, w in zip(global_weights, weights, strict=True):
        g64 = np.asarray(g, dtype=np.float64)
        d = (np.asarray(w, dtype=np.float64) - g64) * factor
        if sigma > 0:
            d = d + rng.normal(0.0, sigma, size=d.shape)
        out.append((g64 + d).astype(np.asarray(g).dtype))
    return out, DpRecord(clip_norm, noise_multiplier, seed, norm, factor < 1.0)


# ---------------------------------------------------------------- secure aggregation

FRAC_BITS = 24  # resolution 2^-24 ~ 6e-8 per coordinate; sums up to 2^39 in magnitude fit


@dataclass(frozen=True, eq=False)
class MaskedUpdate:
    """A client's masked, fixed-point encoded (weight * values); ``weight`` stays public."""

    client_id: str
    layers: list[np.ndarray]  # uint64
    weight: float


def x25519_shared_seed(my_secret_key: bytes, peer_public_key: bytes, context: bytes) -> bytes:
    """Pairwise seed from an X25519 key agreement, bound to ``context`` (e.g. model+round)."""
    from nacl.bindings import crypto_scalarmult

    shared = crypto_scalarmult(my_secret_key, peer_public_key)
    return hashlib.sha256(b"dfml-secagg/1" + shared + context).digest()


def pairwise_seeds(client_ids: Sequence[str], secret: bytes) -> dict[str, dict[str, bytes]]:
    """Seeds for every pair, derived from one ``secret`` (for simulations and tests).

    In a deployment each pair derives its seed with :func:`x25519_shared_seed` instead, so no
    party but the two clients knows it.
    """
    seeds: dict[str, dict[str, bytes]] = {c: {} for c in client_ids}
    for a in client_ids:
        for b in client_ids:
            if a < b:
                s = hashlib.sha256(secret + b"\0" + a.encode() + b"\0" + b.encode()).digest()
                seeds[a][b] = seeds[b][a] = s
    return seeds


def _mask(seed: bytes, layer: int, size: int) -> np.ndarray:
    # SHAKE-256 as the stream: stable across platforms and numpy versions.
    raw = hashlib.shake_256(seed + layer.to_bytes(4, "little")).digest(8 * size)
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


def encode_fixed(values: np.ndarray, frac_bits: int = FRAC_BITS) -> np.ndarray:
    """Fixed-point encode floats as uint64 (two's complement of round(v * 2^frac_bits))."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * float(2**frac_bits))
    if not np.all(np.isfinite(scaled)) or np.any(np.abs(scaled) >= 2.0**62):
        raise FlError(
            "values too large for fixed-point encoding",
            "clip updates before secure aggregation or lower frac_bits",
        )
    return scaled.astype(np.int64).view(np.uint64)


def decode_fixed(values: np.ndarray, frac_bits: int = FRAC_BITS) -> np.ndarray:
    """Inverse of :func:`encode_fixed` (also for sums, as long as they did not overflow)."""
    return np.asarray(values, dtype=np.uint64).view(np.int64).astype(np.float64) / 2.0**frac_bits


def self_seed(secret: bytes, context: bytes) -> bytes:
    """A client's own mask seed for one round (SecAgg's b_i): from its secret key and the
    round, revealed by the client only once its update is in the round's sum."""
    return hashlib.sha256(b"dfml-secagg-self/1" + bytes(secret) + context).digest()


def mask_update(
    client_id: str,
    weights: Weights,
    peer_seeds: dict[str, bytes],
    weight: float = 1.0,
    frac_bits: int = FRAC_BITS,
    own_seed: bytes | None = None,
) -> MaskedUpdate:
    """Encode ``weight * weights`` and add the pairwise masks shared with every peer.

    For each peer, the client with the smaller id adds the mask and the other subtracts it,
    so among clients that all submit the pairwise masks cancel. ``own_seed`` (SecAgg's double
    masking) adds a mask of the client's own as well: then a peer that drops out can be
    recovered from (the survivors reveal their seeds shared with it, see ``unmask_sum``)
    without ever exposing the update the dropped client may have left in storage, which its
    own mask, never revealed, still hides.
    """
    layers = []
    for i, w in enumerate(weights):
        enc = encode_fixed(np.asarray(w, dtype=np.float64) * weight, frac_bits).ravel()
        for peer, seed in sorted(peer_seeds.items()):
            if peer == client_id:
                continue
            m = _mask(seed, i, enc.size)
            # uint64 arithmetic wraps modulo 2^64, which is exactly the group we need.
            enc = enc + m if client_id < peer else enc - m
        if own_seed is not None:
            enc = enc + _mask(b"self" + own_seed, i, enc.size)
        layers.append(enc.reshape(np.shape(w)))
    return MaskedUpdate(client_id, layers, float(weight))


def unmask_sum(
    masked: Sequence[MaskedUpdate],
    frac_bits: int = FRAC_BITS,
    own_seeds: dict[str, bytes] | None = None,
    dropped: dict[tuple[str, str], bytes] | None = None,
) -> list[np.ndarray]:
    """Sum of the submitted clients' ``weight * weights`` (float64). Masks between submitted
    clients cancel modulo 2^64; ``own_seeds`` (each submitted client's, when masked with one)
    and ``dropped`` (``(submitted client, dropped peer) -> their pairwise seed``, revealed by
    the submitted client) remove what does not: every peer that dropped out after the masks
    were made costs one revealed seed per survivor, nothing else."""
    if not masked:
        raise FlError("no masked updates to sum", "collect every selected client's update")
    ordered = sorted(masked, key=lambda m: m.client_id)
    sums = [np.zeros(np.shape(layer), dtype=np.uint64) for layer in ordered[0].layers]
    for m in ordered:
        for s, layer in zip(sums, m.layers, strict=True):
            s += layer
    for i, s in enumerate(sums):
        flat = s.reshape(-1)
        for seed in (own_seeds or {}).values():
            flat -= _mask(b"self" + seed, i, flat.size)
        for (survivor, peer), seed in sorted((dropped or {}).items()):
            m = _mask(seed, i, flat.size)
            # undo what the survivor did for this peer: it added m if its id was the smaller
            if survivor < peer:
                flat -= m
            else:
                flat += m
    return [decode_fixed(s, frac_bits) for s in sums]


def secure_mean(
    masked: Sequence[MaskedUpdate],
    frac_bits: int = FRAC_BITS,
    own_seeds: dict[str, bytes] | None = None,
    dropped: dict[tuple[str, str], bytes] | None = None,
) -> Weights:
    """The example-weighted mean (float64) of updates masked with ``weight=num_examples``:
    all that secure aggregation reveals, and what a linear strategy steps from (the seeds as
    ``unmask_sum`` takes them)."""
    total = math.fsum(m.weight for m in masked)
    if total <= 0:
        raise FlError("masked updates carry zero total weight", "mask with weight=num_examples")
    return [s / total for s in unmask_sum(masked, frac_bits, own_seeds, dropped)]


def secure_fedavg(
    global_weights: Weights, masked: Sequence[MaskedUpdate], frac_bits: int = FRAC_BITS
) -> Weights:
    """FedAvg from masked updates made with ``weight=num_examples``."""
    return [
        np.asarray(m).astype(np.asarray(g).dtype)
        for m, g in zip(secure_mean(masked, frac_bits), global_weights, strict=True)
    ]
