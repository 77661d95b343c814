"""Fixtures for the protocol tests: a fresh simulated chain per test."""

from __future__ import annotations

import pytest
from protocol_sim import Sim


@pytest.fixture
def sim() -> Sim:
    return Sim()
