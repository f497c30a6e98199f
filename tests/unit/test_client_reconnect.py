"""The client reconnects within about a second once a server is back,
however long it was down."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from ecrs.client.client import MAX_RECONNECT_BACKOFF_MS, RecommendClient
from tritonclient.utils import InferenceServerException

from ecrs.stack.ports import LOOPBACK, free_port

OUTAGE_S = 12.0


def poll(client: RecommendClient) -> None:
    try:
        client._client.is_server_live(client_timeout=0.5)
    except InferenceServerException:
        pass


def test_client_reconnects_soon_after_a_long_outage():
    """With gRPC's default backoff, the first attempt after 12 s of refused
    connections came about 4 s after the listener opened."""
    port = free_port()
    client = RecommendClient(f"{LOOPBACK}:{port}")
    started = time.monotonic()
    while time.monotonic() - started < OUTAGE_S:
        poll(client)
        time.sleep(0.1)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((LOOPBACK, port))
    listener.listen()
    connected = threading.Event()

    def accept() -> None:
        connection, _ = listener.accept()
        connected.set()
        connection.close()

    threading.Thread(target=accept, daemon=True).start()
    opened = time.monotonic()
    while not connected.is_set() and time.monotonic() - opened < 10:
        poll(client)
        time.sleep(0.1)
    waited = time.monotonic() - opened
    client.close()
    listener.close()
    assert connected.is_set(), "the client never connected again"
    assert waited <= MAX_RECONNECT_BACKOFF_MS / 1000 + 1.0, (
        f"reconnected after {waited:.1f} s"
    )


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # gRPC honours http_proxy; the test talks to loopback only.
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
