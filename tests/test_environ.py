"""``micronet_lib.environ.environment``: variables set for a block, restored or unset after it, also on error."""

from __future__ import annotations

import os

import pytest

from micronet_lib.environ import environment


def test_values_are_set_inside_and_restored_or_unset_after(monkeypatch):
    monkeypatch.setenv("MICRONET_TEST_KEPT", "before")
    monkeypatch.delenv("MICRONET_TEST_NEW", raising=False)
    with pytest.raises(RuntimeError):
        with environment({"MICRONET_TEST_KEPT": "inside", "MICRONET_TEST_NEW": "inside"}):
            assert os.environ["MICRONET_TEST_KEPT"] == os.environ["MICRONET_TEST_NEW"] == "inside"
            raise RuntimeError("the block fails")
    assert os.environ["MICRONET_TEST_KEPT"] == "before" and "MICRONET_TEST_NEW" not in os.environ
    with environment({}):  # nothing to set is fine
        pass
