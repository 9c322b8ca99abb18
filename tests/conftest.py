"""Shared pytest fixtures (plain helpers: tests/helpers.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors run faster, and timings are steadier, on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or to run clean-fid's / torch.hub's downloaders fails the test."""
    import socket
    import urllib.request

    import cleanfid.downloads_helper
    import cleanfid.inception_torchscript
    import torch.hub

    def refuse(*args, **kwargs):
        raise AssertionError("a network access / download was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(cleanfid.downloads_helper, "check_download_inception", refuse)
    monkeypatch.setattr(cleanfid.inception_torchscript, "check_download_inception", refuse)
    monkeypatch.setattr(cleanfid.downloads_helper, "check_download_url", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
