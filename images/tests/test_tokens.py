"""Tokens: issued once, stored as hashes, revocable (API.md §6)."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from images import access
from images.identity import principal_for
from images.models import Token
from images.tokens import token_authenticate

pytestmark = pytest.mark.django_db


def issue(*args: str) -> str:
    out = io.StringIO()
    call_command("issuetoken", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def test_issuetoken_prints_a_random_token_and_stores_only_its_hash():
    raw = issue("--device", "cam-1")
    other = issue("--device", "cam-1")
    assert raw != other
    assert raw.startswith("img_")
    assert len(raw) > 40
    for stored in Token.objects.all():
        assert len(stored.digest) == 64
        assert raw not in (stored.digest, stored.subject)
    assert token_authenticate(raw).kind == "device"


def test_a_device_token_uploads_only_as_its_device_and_may_read(settings):
    settings.IMAGES_AUTH = "token"
    holder = principal_for(token_authenticate(issue("--device", "cam-1")))
    assert access.may_upload(holder, "cam-1")
    assert not access.may_upload(holder, "cam-2")
    assert access.may_read(holder)
    assert access.may_export(holder, "cam-1")
    assert not access.may_export(holder, "cam-2")


def test_a_reader_token_reads_but_never_uploads(settings):
    settings.IMAGES_AUTH = "token"
    holder = principal_for(token_authenticate(issue("--reader", "dashboard")))
    assert access.may_read(holder)
    assert not access.may_upload(holder, "dashboard")
    assert not access.may_delete(holder, "dashboard")
    assert access.may_export(holder, "any-device")


def test_unknown_tokens_are_refused(settings):
    settings.IMAGES_AUTH = "token"
    issue("--reader", "x")
    assert token_authenticate("img_not-a-real-token") is None
    assert token_authenticate("") is None
    assert not access.may_read(principal_for(None))


@pytest.mark.parametrize("by", ["raw", "id"])
def test_revoketoken_revokes_by_token_or_id(by):
    raw = issue("--device", "cam-9")
    key = raw if by == "raw" else str(token_authenticate(raw).pk)
    call_command("revoketoken", key, stdout=io.StringIO())
    assert token_authenticate(raw) is None
    with pytest.raises(CommandError):
        call_command("revoketoken", key, stdout=io.StringIO())


def test_issuetoken_needs_exactly_one_subject():
    with pytest.raises(CommandError):
        call_command("issuetoken", stdout=io.StringIO(), stderr=io.StringIO())
