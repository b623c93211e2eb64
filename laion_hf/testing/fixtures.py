"""Pytest fixtures for the loopback Hub server, for any test package to reuse.

Use them from a conftest.py with one line::

    from laion_hf.testing.fixtures import hub  # noqa: F401  (pytest finds fixtures by name)

``hub`` is a started :class:`~laion_hf.testing.hub_server.HubServer` with
huggingface_hub and datasets pointed at it (constants patched, ``HF_ENDPOINT``
and ``HF_HUB_DISABLE_XET=1`` exported for subprocesses) and ``HF_TOKEN`` set
to its write token; everything is restored after the test.
"""

from __future__ import annotations

import os

import pytest

from laion_hf.testing.hub_server import HubServer


@pytest.fixture
def hub(tmp_path_factory, monkeypatch):
    """A fresh Hub-compatible server on loopback, with this process's HF clients pointed at it."""
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf-datasets-cache")))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-hub-cache")))
    with HubServer(tmp_path_factory.mktemp("hub-store"), tokens={"hf_test_token": "tester"}) as server:
        with server.environment():
            assert os.environ["HF_ENDPOINT"] == server.url
            yield server
