"""TCP_INFO decoding on a real loopback connection."""

from __future__ import annotations

import socket

import pytest

from pathprobe.probes.tcpinfo import parse_tcp_info, tcp_info


def test_tcp_info_on_a_loopback_socket() -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as cli:
            peer, _ = srv.accept()
            with peer:
                cli.sendall(b"x" * 5000)
                got = 0
                while got < 5000:
                    got += len(peer.recv(65536))
                peer.sendall(b"y" * 300)
                assert len(cli.recv(1000)) > 0
                info = tcp_info(cli)
    assert info["state"] == 1  # TCP_ESTABLISHED
    assert info["retransmits"] == 0
    assert info["total_retrans"] == 0
    assert 0 < info["rtt_us"] < 1_000_000
    assert info["snd_mss"] > 0
    assert info["bytes_acked"] >= 5000
    assert info["bytes_received"] >= 1
    assert info["data_segs_out"] >= 1
    assert info["min_rtt_us"] <= info["rtt_us"] + info["rttvar_us"]


def test_short_struct_keeps_only_what_the_kernel_gave() -> None:
    raw = bytes([1, 0, 2, 0, 0, 0, 0x97, 0]) + (200_000).to_bytes(4, "little") + bytes(92)
    info = parse_tcp_info(raw)
    assert info["retransmits"] == 2
    assert info["rto_us"] == 200_000
    assert info["snd_wscale"] == 7
    assert info["rcv_wscale"] == 9
    assert "total_retrans" in info
    assert "pacing_rate" not in info


def test_not_a_tcp_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(OSError, match="."):
        tcp_info(s)


def test_tcp_info_through_an_asyncio_transport() -> None:
    import asyncio

    async def scenario() -> dict:
        accepted: list[asyncio.StreamWriter] = []

        async def on_conn(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            accepted.append(w)

        server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return tcp_info(writer.transport.get_extra_info("socket"))
        finally:
            for w in [writer, *accepted]:
                w.close()
                await w.wait_closed()
            server.close()
            await server.wait_closed()

    info = asyncio.run(scenario())
    assert info["state"] == 1
    assert info["rtt_us"] > 0
