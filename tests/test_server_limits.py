"""The edge of a real ``verbund gateway`` process, spoken to over raw sockets: header size
and count bounds (431), slow headers and bodies (408), idle connections, the connection
bound (503), and a client leaving mid-body costing no error line."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import federation as fed
from harness.gateway import GatewayProcess
from harness.polling import poll
from harness.ports import free_port

pytestmark = pytest.mark.real

EDGE = {
    "max_header_bytes": 8192,
    "max_headers": 40,
    "header_timeout": 1.0,
    "body_timeout": 1.0,
    "body_min_rate": 1000,
    "keep_alive_timeout": 3.0,
    "max_connections": 6,
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("edge")
    dead = f"http://127.0.0.1:{free_port()}"  # no backend is needed at the edge
    config = fed.federation(
        "ap-edge",
        work / "state",
        [fed.site("west", "NW", [fed.backend("west-1", dead, ["smol"])])],
        port=free_port(),
        gateway=EDGE,
        models=["smol"],
        institutions=[fed.institution("uni-a")],
    )
    gw = GatewayProcess(config, work, log_level="debug")
    gw.launch().wait_ready(path="/healthz")
    gw.key = gw.create_key("uni-a")["key"]
    yield gw
    gw.stop()


def _connect(gw: GatewayProcess) -> socket.socket:
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=20)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def _status_and_body(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """The server may stop reading once it has answered; that is fine here."""
    with contextlib.suppress(OSError):
        sock.sendall(data)


def test_a_huge_header_gets_431_and_never_reaches_the_parser(gateway: GatewayProcess) -> None:
    with _connect(gateway) as sock:
        _send_quietly(sock, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8_000_000)
        status, body = _status_and_body(_read_all(sock))
    assert status == 431
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == "request_header_fields_too_large"
    assert "gateway.max_header_bytes" in error["message"]
    with _connect(gateway) as sock:  # the access point serves on
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _status_and_body(_read_all(sock))[0] == 200


def test_too_many_headers_get_431(gateway: GatewayProcess) -> None:
    headers = b"".join(b"X-H-%d: v\r\n" % i for i in range(200))
    with _connect(gateway) as sock:
        _send_quietly(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        status, body = _status_and_body(_read_all(sock))
    assert status == 431
    assert "gateway.max_headers" in str(body)


def test_oip_paths_get_the_oip_error_shape(gateway: GatewayProcess) -> None:
    headers = b"".join(b"X-H-%d: v\r\n" % i for i in range(200))
    with _connect(gateway) as sock:
        _send_quietly(sock, b"GET /v2/models/x HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        status, body = _status_and_body(_read_all(sock))
    assert status == 431 and isinstance(body["error"], str)


def test_slow_headers_get_408_and_the_connection_closed(gateway: GatewayProcess) -> None:
    """Slowloris: a header line now and then, never the end of the headers."""
    with _connect(gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(0.3)
        answer, began = b"", time.monotonic()
        for i in range(60):  # at most ~18 s of dripping
            try:
                sock.sendall(b"X-Drip-%d: 1\r\n" % i)
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
        closed_after = time.monotonic() - began
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"gateway.header_timeout" in answer
    assert closed_after < 15


def test_idle_connections_are_closed(gateway: GatewayProcess) -> None:
    with _connect(gateway) as sock:  # never sends a request
        assert sock.recv(1) == b""
    with _connect(gateway) as sock:  # idle after one
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = _read_all(sock)
    assert raw.startswith(b"HTTP/1.1 200")


def test_a_slow_body_gets_408(gateway: GatewayProcess) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + gateway.key.encode() + b"\r\nContent-Length: 100000\r\n\r\n"
    )
    with _connect(gateway) as sock:
        sock.sendall(head + b'{"model": "smol", ')
        sock.settimeout(0.3)
        answer = b""
        for _ in range(60):  # a few bytes every 0.3 s, far below 1000 bytes/s
            try:
                sock.sendall(b"       ")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"gateway.body_min_rate" in answer


def test_a_connection_beyond_the_bound_gets_503(gateway: GatewayProcess) -> None:
    held = [_connect(gateway) for _ in range(EDGE["max_connections"])]  # type: ignore[call-overload]
    try:
        with _connect(gateway) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, body = _status_and_body(_read_all(sock))
        assert status == 503
        assert "gateway.max_connections" in str(body)
    finally:
        for s in held:
            s.close()

    def served() -> bool:
        with _connect(gateway) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return _read_all(sock).startswith(b"HTTP/1.1 200")

    poll(served, "a connection to be served again", 20, every=0.2)


def test_a_client_leaving_mid_body_writes_no_error_line(gateway: GatewayProcess) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + gateway.key.encode() + b"\r\nContent-Length: 5000\r\n\r\n"
    )
    with _connect(gateway) as sock:
        sock.sendall(head + b'{"model": "smol"')
    poll(
        lambda: "client disconnected while sending" in gateway.process.log_tail(200_000),
        "the access point to notice the client left",
        20,
    )
    lines = [json.loads(x) for x in Path(gateway.log).read_text().splitlines() if x[:1] == "{"]
    assert not [x for x in lines if x.get("level") in ("error", "critical")]
    assert "Traceback" not in gateway.process.log_tail(200_000)
