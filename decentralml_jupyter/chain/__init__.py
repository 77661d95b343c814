"""Substrate access: the `Chain` client facade, keys, and the local dev chain launcher."""

from .client import Balance, Block, Chain, Receipt
from .keys import is_dev_uri, load_keypair

__all__ = ["Balance", "Block", "Chain", "Receipt", "is_dev_uri", "load_keypair"]
