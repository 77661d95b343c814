"""Addresses for the protocol: SS58 (format 42) strings, and model pools.

Addresses in any SS58 format are accepted and normalised to format 42, the protocol's one
spelling of an account; what a chain shows (its ``ss58Format``) is a matter of display.

A pool is the Substrate ``Multisig`` account of a model's validators, derived purely here
(the same bytes as ``pallet_multisig::multi_account_id``) so no chain connection is needed.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from hashlib import blake2b

from scalecodec.utils.ss58 import ss58_decode, ss58_encode

from .scale import encode_compact

SS58_FORMAT = 42
_MULTISIG_PREFIX = b"modlpy/utilisuba"


@lru_cache(maxsize=4096)
def account_id(address: str) -> bytes:
    """The 32 raw bytes of an SS58 address (of any network's format: a chain may show its
    own, e.g. 2 or 0, and it is the same account) or a 0x-prefixed hex account id."""
    if not isinstance(address, str):
        raise ValueError("an address must be a string")
    if address.startswith("0x"):
        try:
            raw = bytes.fromhex(address[2:])
        except ValueError as e:
            raise ValueError(f"invalid hex account id {address!r}") from e
    else:
        try:
            raw = bytes.fromhex(ss58_decode(address))
        except Exception as e:  # noqa: BLE001 - base58 and checksum errors vary in type
            raise ValueError(f"invalid SS58 address {address!r}") from e
    if len(raw) != 32:
        raise ValueError(f"account ids are 32 bytes, got {len(raw)}")
    return raw


@lru_cache(maxsize=4096)
def ss58(raw: bytes) -> str:
    """The SS58 (format 42) address of 32 raw account-id bytes."""
    return ss58_encode(raw, SS58_FORMAT)


def normalize_address(address: str) -> str:
    """One spelling per account: SS58 format 42, whatever format it came in (the protocol's
    internal spelling, whatever the chain shows). Raises ValueError when invalid."""
    return ss58(account_id(address))


def multisig_address(signatories: Iterable[str], threshold: int) -> str:
    """The deterministic multisig account of ``signatories`` (any order) and ``threshold``.

    blake2_256(b"modlpy/utilisuba" ++ SCALE(Vec<AccountId>, sorted) ++ u16 LE threshold).
    """
    ids = sorted({account_id(s) for s in signatories})
    if not ids:
        raise ValueError("a multisig needs at least one signatory")
    if not 1 <= threshold <= len(ids) or threshold > 0xFFFF:
        raise ValueError(f"threshold {threshold} out of range 1..{len(ids)}")
    payload = _MULTISIG_PREFIX + encode_compact(len(ids)) + b"".join(ids)
    payload += threshold.to_bytes(2, "little")
    return ss58(blake2b(payload, digest_size=32).digest())


def pool_threshold(n_validators: int) -> int:
    """k of n: a strict majority of the validators (also the attestation quorum)."""
    return n_validators // 2 + 1


def pool_address(owner: str, validators: Iterable[str]) -> str:
    """The account holding a model's stakes and budgets.

    No validators: the owner's own account (custodial bootstrap). One validator: that
    validator's account, since ``pallet_multisig`` cannot dispatch from a one-signatory
    multisig. Two or more: the k-of-n multisig with k = ``pool_threshold(n)``.
    """
    vals = sorted(set(validators), key=account_id)
    if not vals:
        return normalize_address(owner)
    if len(vals) == 1:
        return normalize_address(vals[0])
    return multisig_address(vals, pool_threshold(len(vals)))
