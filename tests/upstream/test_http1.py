"""The upstream client (``backends/http1.py``) against a real loopback server that answers with
raw bytes: the framings HTTP/1.1 allows, keep-alive reuse, a connection closed while idle, and a
silence. (The gateway's own paths over it run in the other upstream tests.)"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gatewright.backends import http1

# What the server sends back for each request it reads (one answer per request on a connection):
# bytes, or a list of writes where an empty one is a pause.
Script = Callable[[int], bytes | list[bytes]]


class RawServer:
    def __init__(self, script: Script, close_after: bool = False) -> None:
        self.script = script
        self.close_after = close_after
        self.connections = 0
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.lower().split(b"\r\n")
                length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
                await reader.readexactly(length)
                self.requests += 1
                answer = self.script(self.requests)
                for part in answer if isinstance(answer, list) else [answer]:
                    if part == b"":  # a pause between writes
                        await asyncio.sleep(0.2)
                    writer.write(part)
                    await writer.drain()
                if self.close_after:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(script: Script, close_after: bool = False) -> RawServer:
        server = RawServer(script, close_after)
        servers.append(server)
        return server

    yield start
    for server in servers:
        for writer in server.writers:
            writer.close()
        if server.server is not None:
            server.server.close()


async def _listen(server: RawServer) -> RawServer:
    server.server = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    return server


async def _get(pool: http1.Pool, url: str) -> tuple[int, dict[str, str], bytes]:
    response = await pool.request(url, b'{"x": 1}', {"content-type": "application/json"}, 5.0)
    try:
        return response.status, dict(response.headers), await response.read()
    finally:
        pool.finish(response)


async def _until(condition: Callable[[], bool], limit: float = 30.0) -> None:
    """Wait for what the event loop will do, without betting on how long a loaded machine takes."""
    async with asyncio.timeout(limit):
        while not condition():  # noqa: ASYNC110 - the pool has no event to wait on
            await asyncio.sleep(0.01)


def _chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


async def test_length_chunked_and_close_delimited_bodies(serve: Callable[..., RawServer]) -> None:
    answers = {
        1: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Two: a\r\nX-Two: b\r\n\r\nhello",
        2: b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(b"he", b"llo"),
    }
    server = await _listen(serve(lambda n: answers[n]))
    pool = http1.Pool(5.0)
    assert await _get(pool, server.url) == (200, {"content-length": "5", "x-two": "a, b"}, b"hello")
    status, _, body = await _get(pool, server.url)
    assert (status, body) == (201, b"hello")
    assert server.connections == 1  # kept alive and reused
    await pool.close()

    closing = await _listen(serve(lambda n: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", True))
    pool = http1.Pool(5.0)
    assert (await _get(pool, closing.url))[2] == b"until the end"
    assert (await _get(pool, closing.url))[2] == b"until the end"
    assert closing.connections == 2  # a closed connection is never reused
    await pool.close()


async def test_gzip_answer_and_lines_split_across_chunks(serve: Callable[..., RawServer]) -> None:
    packed = gzip.compress(b"data: one\r\n\ndata: two\n\n")
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed)
    server = await _listen(serve(lambda n: head + packed))
    pool = http1.Pool(5.0)
    assert (await _get(pool, server.url))[2] == b"data: one\r\n\ndata: two\n\n"
    await pool.close()

    pieces = _chunked(b"da", b"ta: o", b"ne\n\nlast")
    split = await _listen(serve(lambda n: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + pieces))
    pool = http1.Pool(5.0)
    response = await pool.request(split.url, b"{}", {}, 5.0)
    lines = [line async for line in response.lines()]
    pool.finish(response)
    assert lines == ["data: one", "", "last"]
    await pool.close()


async def test_idle_connection_closed_by_the_server_is_replaced(serve: Callable[..., RawServer]) -> None:
    server = await _listen(serve(lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    pool = http1.Pool(5.0)
    assert (await _get(pool, server.url))[2] == b"ok"
    for writer in server.writers:  # the server drops the idle keep-alive connection
        writer.close()
    await _until(lambda: all(c.closed for cs in pool.idle.values() for c in cs))
    assert (await _get(pool, server.url))[2] == b"ok"
    assert server.connections == 2
    await pool.close()


async def test_silence_and_early_close_are_errors(serve: Callable[..., RawServer]) -> None:
    silent = await _listen(serve(lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhal"))
    pool = http1.Pool(5.0)
    response = await pool.request(silent.url, b"{}", {}, 2.0)  # the head must come within it too
    with pytest.raises(TimeoutError):
        await response.read()
    pool.finish(response)  # an answer not read whole: the connection is closed, not reused
    assert not any(pool.idle.values())

    cut = await _listen(serve(lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhal", True))
    response = await pool.request(cut.url, b"{}", {}, 5.0)
    with pytest.raises(ConnectionError):
        await response.read()
    pool.finish(response)

    refused = silent.url.rsplit(":", 1)[0] + ":1/v1"
    with pytest.raises(ConnectionError):
        await pool.request(refused, b"{}", {}, 5.0)
    with pytest.raises(ValueError, match="line break"):
        await pool.request(silent.url, b"{}", {"x-evil": "a\r\nx-injected: 1"}, 5.0)
    await pool.close()


async def test_a_stream_read_to_its_end_keeps_its_connection(serve: Callable[..., RawServer]) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    frames = b"%x\r\n%s\r\n" % (len(b"data: [DONE]\n\n"), b"data: [DONE]\n\n")
    # The terminator comes a moment after the last event, as from a server that flushes per event.
    server = await _listen(serve(lambda n: [head + frames, b"", b"0\r\n\r\n"]))
    pool = http1.Pool(5.0)
    for _ in range(2):
        response = await pool.request(server.url, b"{}", {}, 5.0)
        async for line in response.lines():
            if line == "data: [DONE]":
                break
        pool.finish(response, drain=True)
        await _until(lambda: any(pool.idle.values()))  # the drain puts the connection back
    assert server.requests == 2
    assert server.connections == 1  # drained to its end, then reused

    response = await pool.request(server.url, b"{}", {}, 5.0)
    pool.finish(response)  # abandoned: closed at once, so the upstream stops generating
    assert not any(pool.idle.values())
    await pool.close()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, signed by its own key: a private upstream's TLS."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


async def test_https_upstream_is_verified_and_reused(serve: Callable[..., RawServer], tmp_path: Path) -> None:
    """Real providers are HTTPS: the answer comes over TLS with the certificate checked against the
    host name, the connection is reused, and a certificate the client does not trust is refused."""
    cert_file, key_file = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert_file, key_file)
    server = serve(lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
    server.server = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=server_tls)
    url = server.url.replace("http://", "https://")

    trusting = http1.Pool(5.0, ssl.create_default_context(cafile=str(cert_file)))
    assert await _get(trusting, url) == (200, {"content-length": "6"}, b"secret")
    assert (await _get(trusting, url.replace("127.0.0.1", "localhost")))[2] == b"secret"
    await _get(trusting, url)
    assert server.connections == 2  # one per host name, each kept alive and reused
    await trusting.close()

    default = http1.Pool(5.0)  # the system's trust store: a self-signed upstream is not in it
    with pytest.raises(ssl.SSLCertVerificationError):
        await _get(default, url)
    await default.close()


async def _kept_connection_dropped_at_next_send(serve: Callable[..., RawServer]) -> tuple[RawServer, http1.Pool]:
    """A pool holding one kept connection to a server that answers "ok"; the server's side of that
    connection goes away, without answering, as the next request is written on it."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    server = await _listen(serve(lambda n: ok))
    pool = http1.Pool(5.0)
    assert (await _get(pool, server.url))[2] == b"ok"
    (connection,) = pool.idle[next(iter(pool.idle))]
    server_writer = server.writers[0]
    original = connection.send

    def send_then_drop(head: bytes, body: bytes) -> None:
        original(head, body)
        server_writer.transport.abort()

    connection.send = send_then_drop  # type: ignore[method-assign]
    return server, pool


async def test_a_kept_connection_the_server_dropped_as_it_was_reused_is_retried_fresh(
    serve: Callable[..., RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server closes an idle connection just as the next request goes out on it (its FIN not
    # read yet): the request has had no answer at all, so it goes once more on a new connection.
    monkeypatch.setattr(http1, "RETRY_WINDOW", 3600.0)  # however slowly a busy machine notices the drop
    server, pool = await _kept_connection_dropped_at_next_send(serve)
    assert (await _get(pool, server.url))[2] == b"ok"
    assert server.connections == 2
    await pool.close()


async def test_a_line_longer_than_the_read_buffer_still_arrives(serve: Callable[..., RawServer]) -> None:
    line = b"data: " + b"x" * (http1.HIGH_WATER + (http1.HIGH_WATER >> 1))
    body = line + b"\n\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    server = await _listen(serve(lambda n: head + body))
    pool = http1.Pool(5.0)
    response = await pool.request(server.url, b"{}", {}, 5.0)
    lines = [len(got) async for got in response.lines()]
    pool.finish(response)
    assert lines == [len(line), 0]
    await pool.close()


async def test_endless_headers_fail_the_answer(serve: Callable[..., RawServer]) -> None:
    filler = b"x-filler: " + b"y" * 8192 + b"\r\n"
    server = await _listen(serve(lambda n: [b"HTTP/1.1 200 OK\r\n"] + [filler] * 64 + [b"\r\nok"]))
    pool = http1.Pool(5.0)
    with pytest.raises(http1.UpstreamProtocolError, match="headers are longer"):
        await pool.request(server.url, b"{}", {}, 5.0)
    await pool.close()


async def test_informational_answers_before_the_final_one_are_skipped(serve: Callable[..., RawServer]) -> None:
    # RFC 9110 15.2: a client parses 1xx answers before the final one even unasked (103 Early Hints).
    early = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
    server = await _listen(serve(lambda n: [early, b"", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]))
    pool = http1.Pool(5.0)
    assert await _get(pool, server.url) == (200, {"content-length": "2"}, b"ok")
    assert await _get(pool, server.url) == (200, {"content-length": "2"}, b"ok")
    assert server.connections == 1
    await pool.close()


async def test_an_answer_longer_than_the_pool_allows_fails_and_is_not_kept(serve: Callable[..., RawServer]) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    declared = b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % (1 << 30)
    chunk = b"x" * 8192
    endless = [b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n"]
    endless += [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 64
    answers = {1: ok, 2: declared, 3: ok, 4: endless, 5: ok}
    server = await _listen(serve(lambda n: answers[n]))
    pool = http1.Pool(5.0, max_body=1 << 16)
    assert (await _get(pool, server.url))[2] == b"ok"
    # Declared longer than allowed: refused before any of it is read, and the connection closed.
    with pytest.raises(http1.AnswerTooLarge, match="longer than 65536 bytes"):
        await _get(pool, server.url)
    assert not any(pool.idle.values())
    assert (await _get(pool, server.url))[2] == b"ok"
    # Chunked without end (half a MiB, never terminated): fails once past the limit, closed too.
    with pytest.raises(http1.AnswerTooLarge):
        await _get(pool, server.url)
    assert not any(pool.idle.values())
    assert (await _get(pool, server.url))[2] == b"ok"
    assert server.connections == 3  # a fresh connection after each refused answer
    await pool.close()


async def test_a_stream_that_goes_silent_fails_after_the_silence(serve: Callable[..., RawServer]) -> None:
    """No total deadline on a stream (a long generation that keeps sending is not cut), but a
    silence between two chunks as long as the read timeout ends it, and its connection."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    event = b"data: {}\n\n"
    server = await _listen(serve(lambda n: head + b"%x\r\n%s\r\n" % (len(event), event)))
    pool = http1.Pool(5.0)
    response = await pool.request(server.url, b"{}", {}, 2.0)  # 0.3 s: within reach of a loaded machine's stalls
    seen: list[str] = []
    with pytest.raises(TimeoutError):
        async for line in response.lines():
            seen.append(line)
    pool.finish(response)
    assert seen == ["data: {}", ""]
    assert not any(pool.idle.values())
    await pool.close()


async def test_an_idle_connection_is_kept_less_long_than_servers_keep_theirs(
    serve: Callable[..., RawServer],
) -> None:
    # uvicorn (vLLM, SGLang), llama.cpp's server and Node close idle connections after 5 s: a pool
    # keeping them longer reuses some just as their server closes them.
    assert http1.Pool(5.0).keepalive < 5.0
    server = await _listen(serve(lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    pool = http1.Pool(5.0, keepalive=0.05)
    assert (await _get(pool, server.url))[2] == b"ok"
    (connection,) = pool.idle[next(iter(pool.idle))]
    idle_until = connection.idle_since + 0.05
    await _until(lambda: time.monotonic() > idle_until)
    assert (await _get(pool, server.url))[2] == b"ok"
    assert server.connections == 2  # idle past the pool's keep-alive: not reused
    assert connection.closed
    await pool.close()


async def test_a_kept_connection_dropped_long_after_the_request_went_out_is_not_sent_again(
    serve: Callable[..., RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past the retry window the drop may be a server that took the request and died: whether to
    # send it again (a second generation upstream) is the router's retry policy, not the client's.
    monkeypatch.setattr(http1, "RETRY_WINDOW", -1.0)  # every drop comes "late"
    server, pool = await _kept_connection_dropped_at_next_send(serve)
    with pytest.raises(ConnectionError):
        await _get(pool, server.url)
    assert server.connections == 1
    await pool.close()
