"""Schemathesis against the live OpenAPI schema (API.md §7).

A real ``runserver`` serves ``/api/schema``; schemathesis reads it and sends
generated requests (valid and invalid, in every documented media type, then
along the upload's links) to every operation. The service must never answer
5xx, and every answer must match what the schema says of its status and
media type.

This module is also the run's hooks module (``SCHEMATHESIS_HOOKS``): the
hooks below teach schemathesis our CBOR and link-format bodies, so that those
answers are checked against the schema too instead of skipped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import cbor2
import pytest
import schemathesis

from conftest import ROOT, start_runserver, stop

pytestmark = pytest.mark.slow

# Test cases per operation and phase: the whole run (examples, coverage,
# fuzzing, stateful) stays well under 90 seconds on two cores.
MAX_EXAMPLES = 10
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)
# Fixed, so that CI is reproducible; SCHEMATHESIS_SEED explores others.
SEED = os.environ.get("SCHEMATHESIS_SEED", "20240818")


@schemathesis.serializer("application/cbor")
def cbor_body(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    return cbor2.dumps(value)


@schemathesis.deserializer("application/cbor")
def cbor_answer(ctx: schemathesis.DeserializationContext, response: schemathesis.Response) -> Any:
    return cbor2.loads(response.content)


@schemathesis.deserializer("application/link-format")
def link_format_answer(
    ctx: schemathesis.DeserializationContext, response: schemathesis.Response
) -> str:
    # RFC 6690 §7.1: link format is UTF-8 text; the schema says "a string".
    return response.content.decode("utf-8")


def run_schemathesis(url: str, tmp: Path, *extra: str) -> tuple[int, str]:
    """The CLI's exit code and report, for the schema at ``url``."""
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{url}/api/schema",
        f"--checks={CHECKS}",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={SEED}",
        "--workers=1",
        "--request-timeout=30",
        # The event streams never end (schemathesis reads whole answers);
        # test_events.py drives them with a streaming client.
        "--exclude-operation-id=events",
        "--exclude-operation-id=device_events",
        *extra,
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": __name__, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        command, cwd=tmp, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("mode", ["open", "token"])
def test_the_live_api_answers_as_its_schema_says_and_never_5xx(tmp_path, mode):
    """In token mode the requests bear the device token of the example's device (12345)."""
    # Imported here: this module is also loaded outside Django, as schemathesis's hooks.
    from images.tests.test_auth import token_server_token

    server = start_runserver(tmp_path, {"IMAGES_AUTH": mode})
    try:
        extra = []
        if mode == "token":
            token = token_server_token(server, "--device", "12345")
            extra = [f"--header=Authorization: Bearer {token}"]
        code, report = run_schemathesis(server.url, tmp_path, *extra)
    finally:
        stop(server.process)
    generated = re.search(r"(\d+) generated", report)
    print(report[-1500:])
    print(f"schemathesis ({mode} mode): {generated.group(1) if generated else '?'} test cases run")
    assert code == 0, report
    assert generated is not None
    assert int(generated.group(1)) > 100
