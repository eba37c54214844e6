"""The outbox's HTTP/1.1 client (hooks/http11.py), against raw servers on loopback that
answer with scripted bytes: the answers' framings, kept connections, limits, timeouts,
and TLS."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks import Webhook

from homing_collector.hooks import http11
from homing_collector.hooks.delivery import MAX_ANSWER_BYTES, Attempt, Body, Outcome
from homing_collector.hooks.signing import SigningKeys, new_secret

KEYS = SigningKeys(new_secret())
BODY = Body(b'{"n":1}')


class Server:
    """Reads each request whole, and writes what `answer(n, head, body)` gives (None:
    close the connection without answering; b"": answer nothing and wait)."""

    def __init__(self, answer: Callable[[int, bytes, bytes], bytes | None]) -> None:
        self.answer = answer
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.port = 0
        self.close_after_answer = False
        self.split_every = 0  # bytes of each write of an answer (0: the whole at once)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                answer = self.answer(len(self.requests) - 1, head, body)
                if answer is None:
                    break
                if not answer:
                    await asyncio.sleep(30)
                step = self.split_every or len(answer)
                for start in range(0, len(answer), step):  # in pieces, if asked
                    writer.write(answer[start : start + step])
                    await writer.drain()
                    if self.split_every:
                        await asyncio.sleep(0.002)
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(
    answer: Callable[[int, bytes, bytes], bytes | None], tls: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    server = Server(answer)
    listening = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=tls)
    server.port = listening.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listening.close()


def always(answer: bytes) -> Callable[[int, bytes, bytes], bytes | None]:
    return lambda _n, _head, _body: answer


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def call(
    client: http11.Client, url: str, *, timeout: float = 5.0, body: Body = BODY
) -> Attempt:
    return await http11.attempt(client, url, "msg_1", body, KEYS, now=time.time(), timeout=timeout)


def test_calls_are_signed_and_share_one_kept_connection() -> None:
    async def main() -> None:
        async with serving(always(OK)) as server:
            client = http11.Client()
            url = f"http://127.0.0.1:{server.port}/in?x=1"
            results = [await call(client, url) for _ in range(5)]
            await client.aclose()
        assert [r.outcome for r in results] == [Outcome.DELIVERED] * 5
        assert results[0].answer == b"ok"
        assert server.connections == 1
        head, body = server.requests[0]
        lines = head.decode().split("\r\n")
        assert lines[0] == "POST /in?x=1 HTTP/1.1"
        headers = dict(line.split(": ", 1) for line in lines[1:] if line)
        assert headers["host"] == f"127.0.0.1:{server.port}"
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"] == "homing-webhooks/1"
        assert Webhook(KEYS.current).verify(body, headers) == {"n": 1}

    asyncio.run(main())


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ],
    ids=["chunked", "100-continue", "204"],
)
def test_answers_framed_every_way_are_read(answer: bytes) -> None:
    async def main() -> None:
        async with serving(always(answer)) as server:
            client = http11.Client()
            results = [await call(client, f"http://127.0.0.1:{server.port}/") for _ in range(2)]
            await client.aclose()
        assert [r.outcome for r in results] == [Outcome.DELIVERED] * 2
        assert results[0].answer in (b"ok", b"")

    asyncio.run(main())


def test_an_answer_that_comes_a_few_bytes_at_a_time_is_read_whole() -> None:
    answer = (
        b"HTTP/1.1 503 Busy\r\nretry-after: 120\r\ntransfer-encoding: chunked\r\n\r\n"
        b"4\r\ntry \r\n5\r\nlater\r\n0\r\n\r\n"
    )

    async def main() -> Attempt:
        async with serving(always(answer)) as server:
            server.split_every = 3
            client = http11.Client()
            result = await call(client, f"http://127.0.0.1:{server.port}/")
            await client.aclose()
        return result

    result = asyncio.run(main())
    assert (result.outcome, result.retry_after) == (Outcome.RETRY, 120.0)
    assert result.error == "503: try later"


def test_an_answer_that_ends_with_the_connection_is_read_whole() -> None:
    async def main() -> None:
        async with serving(always(b"HTTP/1.1 503 Busy\r\n\r\ntry later")) as server:
            server.close_after_answer = True
            client = http11.Client()
            first = await call(client, f"http://127.0.0.1:{server.port}/")
            second = await call(client, f"http://127.0.0.1:{server.port}/")
            await client.aclose()
        assert first.outcome is Outcome.RETRY and first.error == "503: try later"
        assert second.outcome is Outcome.RETRY
        assert server.connections == 2

    asyncio.run(main())


def test_a_kept_connection_the_server_closed_is_replaced() -> None:
    async def main() -> None:
        async with serving(always(OK)) as server:
            server.close_after_answer = True  # with no "connection: close" said
            client = http11.Client()
            first = await call(client, f"http://127.0.0.1:{server.port}/")
            await asyncio.sleep(0.05)
            # The closed connection is seen and dropped before it is used, or used, fails
            # before any answer and the call goes again on a new one.
            second = await call(client, f"http://127.0.0.1:{server.port}/")
            await client.aclose()
        assert (first.outcome, second.outcome) == (Outcome.DELIVERED, Outcome.DELIVERED)
        assert server.connections == 2
        assert len(server.requests) == 2

    asyncio.run(main())


def test_a_call_a_kept_connection_drops_unanswered_goes_again_on_a_new_one() -> None:
    async def main() -> None:
        # The second request, on the kept connection, is read and dropped unanswered, as
        # by a server that closed the connection meanwhile.
        async with serving(lambda n, _head, _body: None if n == 1 else OK) as server:
            client = http11.Client()
            first = await call(client, f"http://127.0.0.1:{server.port}/")
            second = await call(client, f"http://127.0.0.1:{server.port}/")
            await client.aclose()
        assert (first.outcome, second.outcome) == (Outcome.DELIVERED, Outcome.DELIVERED)
        assert (server.connections, len(server.requests)) == (2, 3)

    asyncio.run(main())


def test_a_connection_idle_too_long_is_not_used_again() -> None:
    async def main() -> None:
        async with serving(always(OK)) as server:
            client = http11.Client(keepalive_expiry=0.05)
            await call(client, f"http://127.0.0.1:{server.port}/")
            await asyncio.sleep(0.1)
            await call(client, f"http://127.0.0.1:{server.port}/")
            await client.aclose()
        assert server.connections == 2

    asyncio.run(main())


def test_a_connection_closed_before_any_answer_is_retried_once_then_reported() -> None:
    async def main() -> None:
        async with serving(lambda _n, _head, _body: None) as server:
            client = http11.Client()
            result = await call(client, f"http://127.0.0.1:{server.port}/")
            await client.aclose()
        assert result.outcome is Outcome.RETRY
        assert "ConnectionResetError" in result.error
        assert len(server.requests) == 1  # a new connection gets one try, not two

    asyncio.run(main())


def test_retry_after_410_and_other_statuses_are_classified() -> None:
    answers = [
        b"HTTP/1.1 429 Slow\r\nretry-after: 7\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 410 Gone\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 302 Found\r\nlocation: /x\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 400 Bad\r\ncontent-length: 3\r\n\r\nbad",
    ]

    async def main() -> list[Attempt]:
        async with serving(lambda n, _head, _body: answers[n]) as server:
            client = http11.Client()
            results = [await call(client, f"http://127.0.0.1:{server.port}/") for _ in answers]
            await client.aclose()
        return results

    slow, gone, moved, bad = asyncio.run(main())
    assert (slow.outcome, slow.status, slow.retry_after) == (Outcome.RETRY, 429, 7.0)
    assert (gone.outcome, moved.outcome, bad.outcome) == (
        Outcome.GONE,
        Outcome.FAILED,
        Outcome.FAILED,
    )
    assert "redirects are not followed" in moved.error
    assert bad.error == "400: bad"


def test_an_error_answer_is_kept_short_and_an_oversized_one_fails() -> None:
    long_error = b"HTTP/1.1 500 Oops\r\ncontent-length: 100000\r\n\r\n" + b"x" * 100_000
    huge = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (MAX_ANSWER_BYTES + 10)
    huge += b"y" * (MAX_ANSWER_BYTES + 10)

    async def main() -> tuple[Attempt, Attempt]:
        async with serving(lambda n, _head, _body: [long_error, huge][n]) as server:
            client = http11.Client()
            error = await call(client, f"http://127.0.0.1:{server.port}/")
            oversized = await call(client, f"http://127.0.0.1:{server.port}/")
            await client.aclose()
        return error, oversized

    error, oversized = asyncio.run(main())
    assert error.outcome is Outcome.RETRY and error.error == "500: " + "x" * 200
    assert oversized.outcome is Outcome.FAILED and "over" in oversized.error


def test_a_silent_receiver_times_out_and_a_garbled_answer_is_retried() -> None:
    async def main() -> tuple[Attempt, Attempt]:
        async with serving(always(b"")) as silent, serving(always(b"NOT HTTP\r\n\r\n")) as bad:
            client = http11.Client()
            started = time.monotonic()
            timed_out = await call(client, f"http://127.0.0.1:{silent.port}/", timeout=0.3)
            assert time.monotonic() - started < 3
            garbled = await call(client, f"http://127.0.0.1:{bad.port}/")
            await client.aclose()
        return timed_out, garbled

    timed_out, garbled = asyncio.run(main())
    assert timed_out.outcome is Outcome.RETRY and timed_out.error.startswith(
        "timed out after 0.3 s"
    )
    assert garbled.outcome is Outcome.RETRY and "ProtocolError" in garbled.error


def test_a_refused_connection_is_retried_and_a_bad_url_fails() -> None:
    async def main() -> tuple[Attempt, Attempt]:
        client = http11.Client()
        async with serving(always(OK)) as server:
            port = server.port
        refused = await call(client, f"http://127.0.0.1:{port}/")
        bad = await call(client, "ftp://127.0.0.1/")
        await client.aclose()
        return refused, bad

    refused, bad = asyncio.run(main())
    assert refused.outcome is Outcome.RETRY
    assert bad.outcome is Outcome.FAILED


def test_credentials_and_odd_paths_go_as_httpx_sends_them() -> None:
    target = http11.target("https://us%40er:p%3Ass@h.example:8443/a b/é?q=1 2")
    assert target.origin == http11.Origin("https", "h.example", 8443)
    lines = target.head.decode().split("\r\n")
    assert lines[0] == "POST /a%20b/%C3%A9?q=1%202 HTTP/1.1"
    assert lines[1] == "host: h.example:8443"
    assert lines[2] == "authorization: Basic " + base64.b64encode(b"us@er:p:ss").decode()
    assert http11.target("http://h.example:80").head.startswith(
        b"POST / HTTP/1.1\r\nhost: h.example\r\n"
    )


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_verifies_the_receivers_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = _certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def main() -> tuple[Attempt, Attempt]:
        async with serving(always(OK), tls=server_tls) as server:
            url = f"https://localhost:{server.port}/"
            client = http11.Client()
            untrusted = await call(client, url)  # certifi's authorities do not know it
            trusting = ssl.create_default_context(cafile=str(cert))
            monkeypatch.setattr(http11, "_tls", lambda: trusting)
            trusted = [await call(client, url) for _ in range(3)]
            await client.aclose()
        # The refused handshake never reached the server's handler; one connection, kept,
        # carried the 3 calls.
        assert (server.connections, len(server.requests)) == (1, 3)
        return untrusted, trusted[-1]

    untrusted, trusted = asyncio.run(main())
    assert untrusted.outcome is Outcome.RETRY and "CERTIFICATE_VERIFY_FAILED" in untrusted.error
    assert trusted.outcome is Outcome.DELIVERED and trusted.answer == b"ok"
