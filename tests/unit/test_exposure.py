"""Reading listening sockets from /proc/net/tcp{,6} and judging their addresses."""

from __future__ import annotations

from ecrs.faults.exposure import Listener, decode_address, exposed, listening_inodes


def test_decode_address_reads_ipv4_and_ipv6():
    assert decode_address("0100007F:1F90") == ("127.0.0.1", 8080)
    assert decode_address("00000000:0050") == ("0.0.0.0", 80)
    assert decode_address("00000000000000000000000000000000:1F40") == ("::", 8000)
    assert decode_address("0000000000000000FFFF00000100007F:0016") == (
        "::ffff:7f00:1",
        22,
    )


def test_exposed_lists_listeners_off_loopback():
    listeners = [
        Listener("redis", 1, "127.0.0.1", 6379),
        Listener("triton", 2, "0.0.0.0", 8001),
        Listener("triton", 2, "::ffff:7f00:1", 8002),
        Listener("triton", 2, "::", 8000),
        Listener("milvus", 3, "::", 19530),
    ]
    assert [item.port for item in exposed(listeners, {"milvus"})] == [8001, 8000]


def test_listening_inodes_reads_listen_state_only(tmp_path):
    net = tmp_path / "net"
    net.mkdir()
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    (net / "tcp").write_text(
        header
        + "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1\n"
        + "   1: 0100007F:1F91 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 222 1\n"
    )
    assert listening_inodes(tmp_path) == {111: ("127.0.0.1", 8080)}


def test_stopped_triton_shared_memory_is_removed(tmp_path):
    """Files with the stopped server's prefix go; another server's stay."""
    from ecrs.stack.triton_server import remove_shm_regions

    (tmp_path / "ecrs8001-ab12-region1").write_bytes(b"x")
    (tmp_path / "ecrs8001-ab12-region2").write_bytes(b"x")
    (tmp_path / "ecrs9001-cd34-region1").write_bytes(b"x")
    command = [
        "tritonserver",
        "--backend-config=python,shm-region-prefix-name=ecrs8001-ab12-",
    ]
    removed = remove_shm_regions(command, shm_dir=tmp_path)
    assert sorted(removed) == ["ecrs8001-ab12-region1", "ecrs8001-ab12-region2"]
    assert [path.name for path in tmp_path.iterdir()] == ["ecrs9001-cd34-region1"]
