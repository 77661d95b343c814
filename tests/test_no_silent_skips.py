"""Under CI (CI=true) a missing declared dependency or browser fails the run with its reason;
elsewhere it skips, saying what to install."""

from __future__ import annotations

import pytest

from tests.conftest import require, unavailable


def test_a_missing_dependency_fails_under_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must have this: no Chromium"):
        unavailable("no Chromium")
    with pytest.raises(pytest.fail.Exception, match="not_a_module_dfml does not import"):
        require("not_a_module_dfml")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="no Chromium"):
        unavailable("no Chromium")
    assert require("json").dumps([1]) == "[1]"
