"""docs/hooks.md: its verification snippets run, and its figures are the code's."""

from __future__ import annotations

import doctest
import gzip
import os
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from homing_collector.campaigns import channels, scheduler
from homing_collector.hooks import delivery, outbox, payloads, records, retry, signing, streams
from homing_collector.hooks.dispatch import Destination
from homing_collector.hooks.signing import SigningKeys, new_secret
from tests.collector.hooks.receiver import Answer, always, serving
from tests.collector.test_docs import code_blocks, section

HOOKS_MD = Path(__file__).resolve().parents[3] / "docs" / "hooks.md"
TEXT = HOOKS_MD.read_text()


def test_the_page_says_what_is_served() -> None:
    banner = TEXT.split("\n## ")[0]
    assert "**Served.** Custom channels and FILTER hooks on campaigns, event streams" in banner
    assert "Not served" not in banner


def test_the_python_verification_runs() -> None:
    (block,) = code_blocks(section(TEXT, "Verify in Python"), "python")
    namespace: dict[str, Any] = {}
    exec(compile(block, str(HOOKS_MD), "exec"), namespace)
    verify = namespace["verify"]

    keys = SigningKeys(new_secret()).rotate()
    now = datetime.now(timezone.utc)
    body = b'{"Endpoints": {}}'
    headers = keys.headers("msg_doc", now, body)
    assert verify(keys.previous, body, headers) == body
    assert verify(keys.current, body, headers) == body
    batch = delivery.ndjson_gzip_body([{"event_type": "a"}])
    headers = {**keys.headers("msg_batch", now, batch.content), "content-encoding": "gzip"}
    assert verify(keys.current, batch.content, headers) == b'{"event_type":"a"}\n'
    with pytest.raises(WebhookVerificationError):
        verify(keys.current, body + b" ", keys.headers("msg_doc", now, body))


needs_tools = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("bash", "openssl", "base64", "od", "curl")),
    reason="bash, openssl, base64, od and curl run the shell snippets",
)


def _sh(block: str, env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        ["bash", "-eu", "-o", "pipefail", "-c", block],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@needs_tools
def test_the_openssl_snippet_computes_the_signature(tmp_path: Path) -> None:
    check, _send = code_blocks(section(TEXT, "Verify with openssl"), "sh")
    keys = SigningKeys(new_secret()).rotate()
    body = gzip.compress(b'{"binary": "\\u0000 and all"}\n')  # any bytes, not only text
    (tmp_path / "body.bin").write_bytes(body)
    headers = keys.headers("msg_shell", datetime.now(timezone.utc), body)
    for secret in (keys.current, keys.previous):
        assert secret is not None
        env = {"SECRET": secret, "ID": headers["webhook-id"], "TS": headers["webhook-timestamp"]}
        computed = _sh(check, env, tmp_path).strip()
        assert f"v1,{computed}" in headers["webhook-signature"].split(" ")


@needs_tools
def test_the_curl_snippet_sends_a_call_the_library_verifies(tmp_path: Path) -> None:
    _check, send = code_blocks(section(TEXT, "Verify with openssl"), "sh")
    secret = new_secret()
    with serving(always(Answer(204))) as (receiver,):
        _sh(send, {"SECRET": secret, "RECEIVER_URL": receiver.url}, tmp_path)
    (got,) = receiver.received
    assert Webhook(secret).verify(got.body, got.headers) == {"test": True}
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60


def test_the_figures_are_the_codes() -> None:
    policy = retry.RetryPolicy(jitter=0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert policy.max_delay == 2 * 3600 and policy.budget == 24 * 3600
    assert retry.RetryPolicy().jitter == 0.2
    now, attempts = 0.0, 1
    while (at := policy.next_attempt(retry=attempts, first_attempt_at=0, now=now)) is not None:
        now, attempts = at, attempts + 1
    assert 18 <= attempts <= 22  # "about 20 attempts in all"
    assert delivery.DEFAULT_TIMEOUT == 15
    assert Destination("d", "https://x", SigningKeys(new_secret())).concurrency == 4
    assert payloads.MAX_ENDPOINTS_PER_CALL == 50
    assert (payloads.FILTER_TIMEOUT, payloads.FILTER_MAX_ATTEMPTS) == (15, 3)
    assert len(signing.new_secret().removeprefix("whsec_")) == 44  # base64 of 32 bytes
    assert records.EVENT_VERSION in TEXT
    for name in (channels.FILTERED_OUT_BY_HOOK, channels.FILTER_HOOK_FAILED):
        assert f"| `{name}` |" in TEXT
    assert "up to 4 batches at once" in TEXT and scheduler.FILTER_CONCURRENCY == 4
    assert f"batches of at most {streams.BATCH_EVENTS}" in TEXT
    assert f"while {streams.MAX_PENDING_BATCHES} batches wait" in TEXT
    assert (
        outbox.destination_label("https://u:p@h.example:8443/x?token=1")
        == "https://h.example:8443/x"
    )


@pytest.mark.parametrize("module", [retry, signing])
def test_the_modules_examples_run(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0
