"""Tokens (publisher/tokens.py): the current form names a subscriber id and nothing about the
reader; the old form that earlier releases mailed still reads; secrets must be strong, and
previous ones verify. (Over real HTTP and real processes: tests/test_web_security.py.)"""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest

from publisher.config import default_config
from publisher.errors import PublisherError
from publisher.tokens import (
    MAKE_SECRET,
    PREVIEW_SECRET,
    Signer,
    Subject,
    TokenError,
    check_secret,
    make_secret,
    read,
    secret_from_env,
    secrets_from_env,
    sign,
    sign_id,
)

KEY = b"unit-test-secret-0123456789abcdefghij"
OTHER = b"another-secret-0123456789abcdefghijkl"
IDS = [0, 1, 255, 256, 70_000, 2**31 - 1, 2**63 + 5, 2**64 - 1]


def unb64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


@pytest.mark.parametrize("subscriber_id", IDS)
def test_current_form_round_trips_and_is_compact(subscriber_id: int) -> None:
    for purpose in ("unsubscribe", "manage"):
        token = sign_id(KEY, purpose, subscriber_id)
        assert token == Signer(KEY, purpose).sign_id(subscriber_id)  # the send path's signer
        assert read([KEY], token, purpose) == Subject(subscriber_id=subscriber_id)
        assert "." not in token and "=" not in token
        id_bytes = max(1, (subscriber_id.bit_length() + 7) // 8)
        assert (len(unb64(token)) - 1 - id_bytes) * 8 >= 128  # version, id, then the MAC
        assert len(token) <= 34
    token = sign_id(KEY, "confirm", subscriber_id, 1_700_000_000.9)
    assert read([KEY], token, "confirm") == Subject(
        subscriber_id=subscriber_id, issued=1_700_000_000
    )


def test_current_form_carries_nothing_of_the_address() -> None:
    # The address is not an input at all: a token is the version byte, the id (and for a
    # confirmation the issue time) and 16 bytes of MAC, nothing else.
    a, b = sign_id(KEY, "unsubscribe", 41), sign_id(KEY, "unsubscribe", 42)
    assert a != b
    assert unb64(a)[:2] == b"\x01\x29" and len(unb64(a)) == 2 + 16
    raw = unb64(sign_id(KEY, "confirm", 42, 1_700_000_000))
    assert raw[:7] == b"\x01" + (1_700_000_000).to_bytes(5, "big") + b"\x2a"
    assert len(raw) == 7 + 16


@pytest.mark.parametrize("purpose", ["unsubscribe", "manage", "confirm"])
def test_every_altered_byte_and_every_other_purpose_or_key_is_refused(purpose: str) -> None:
    issued = 1_700_000_000 if purpose == "confirm" else None
    token = sign_id(KEY, purpose, 1234, issued)
    raw = unb64(token)
    for i in range(len(raw)):
        altered = raw[:i] + bytes([raw[i] ^ 1]) + raw[i + 1 :]
        with pytest.raises(TokenError):
            read([KEY], base64.urlsafe_b64encode(altered).rstrip(b"=").decode(), purpose)
    for other in {"unsubscribe", "manage", "confirm"} - {purpose}:
        with pytest.raises(TokenError):
            read([KEY], token, other)
    with pytest.raises(TokenError):
        read([OTHER], token, purpose)
    for bad in (token + "=", token[:-1], token + "A", "", "A" * 500, token.replace("-", "+")):
        if bad != token:
            with pytest.raises(TokenError):
                read([KEY], bad, purpose)


def test_old_form_from_earlier_releases_still_reads() -> None:
    # Exactly what the previous release mailed: base64url(address) "." base64url(mac).
    old = sign(KEY, "unsubscribe", "ada@gmail.com")
    assert old.startswith("YWRhQGdtYWlsLmNvbQ.")
    assert old == Signer(KEY, "unsubscribe").sign("ada@gmail.com")
    assert read([OTHER, KEY], old, "unsubscribe") == Subject(email="ada@gmail.com")
    confirm = sign(KEY, "confirm", "ada@gmail.com|1700000000")
    assert read([KEY], confirm, "confirm") == Subject(email="ada@gmail.com", issued=1_700_000_000)
    with pytest.raises(TokenError):
        read([KEY], sign(KEY, "confirm", "ada@gmail.com"), "confirm")  # no issue time
    with pytest.raises(TokenError):
        read([OTHER], old, "unsubscribe")
    # The longest addresses' old links too (their tokens run to hundreds of characters).
    long_address = "a" * 64 + "@" + ".".join(["b" * 63] * 3) + ".example"
    long_token = sign(KEY, "unsubscribe", long_address)
    assert len(long_token) > 300
    assert read([KEY], long_token, "unsubscribe") == Subject(email=long_address)
    # The two forms never stand in for each other, whatever the bytes.
    with pytest.raises(TokenError):
        read([KEY], old.replace(".", ""), "unsubscribe")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", False),
        ("x", False),
        ("change-me", False),
        ("a" * 31, False),
        ("0123456789abcdef0123456789abcde", False),  # 31 bytes
        ("ab" * 40, False),  # long but two characters
        ("abcdefg" * 6, False),  # seven distinct
        # Issue 27: long and varied enough for the old rule (32 bytes, 8 distinct), guessable.
        ("abcdefghabcdefghabcdefghabcdefgh", False),
        ("mynewsletter-secret-key-2024-prod", False),
        ("new-secret-K7pQ2xV9mR4tW8yZ3bN6cF1hJ5", False),  # 26 random characters: ~2^86
        ("0123456789abcdef0123456789abcdef", False),  # a sequence, however long
        ("d41d8cd98f00b204e9800998ecf8427e", False),  # `openssl rand -hex 16` is too little
        ("q3Jm0c2yC1f7m8l7W1gH5pQ2kZ9sX4vB6nT0aE3dR8U=", True),  # `openssl rand -base64 32`
        ("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", True),  # -hex 32
        ("66k6WExgXIqHg4nz5gFS_HYVetMgPCVJDV62nj96cxk", True),  # `publisher secret`
    ],
)
def test_secret_rules(value: str, ok: bool) -> None:
    if ok:
        assert check_secret(value, "config.toml", "PUBLISHER_SECRET") == value.encode()
        return
    with pytest.raises(PublisherError) as exc:
        check_secret(value, "config.toml", "PUBLISHER_SECRET")
    message = str(exc.value)
    assert "\n" not in message and message.startswith("config.toml: $PUBLISHER_SECRET is too weak")
    assert f"export PUBLISHER_SECRET=$({MAKE_SECRET})" in message
    assert len(value) < 5 or value not in message  # never the value itself


def test_make_secret_is_fresh_and_passes() -> None:
    made = {make_secret() for _ in range(20)}
    assert len(made) == 20
    for value in made:
        assert len(value) == 43 and check_secret(value, "c", "V") == value.encode()


def test_secrets_from_env_current_then_previous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = default_config(tmp_path)
    new, old, older = (make_secret() for _ in range(3))
    monkeypatch.delenv("PUBLISHER_SECRET", raising=False)
    monkeypatch.delenv("PUBLISHER_SECRET_PREVIOUS", raising=False)
    assert secret_from_env(cfg, required=False) == PREVIEW_SECRET
    with pytest.raises(PublisherError, match="not set"):
        secrets_from_env(cfg)
    monkeypatch.setenv("PUBLISHER_SECRET", new)
    assert secrets_from_env(cfg) == [new.encode()]
    monkeypatch.setenv("PUBLISHER_SECRET_PREVIOUS", f"  {old},{older}\n{new} ")
    assert secrets_from_env(cfg) == [new.encode(), old.encode(), older.encode()]
    assert secret_from_env(cfg) == new.encode()  # signing: the current one only
    monkeypatch.setenv("PUBLISHER_SECRET_PREVIOUS", f"{old} tooshort")
    with pytest.raises(PublisherError, match=r"\$PUBLISHER_SECRET_PREVIOUS is too weak"):
        secrets_from_env(cfg)
    # A weak current secret is refused even where a missing one falls back to the preview's.
    monkeypatch.setenv("PUBLISHER_SECRET", "short")
    with pytest.raises(PublisherError, match="too weak"):
        secret_from_env(cfg, required=False)
    # Another variable name follows [web] secret_env.
    other = dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, secret_env="MY_KEY"))
    monkeypatch.setenv("MY_KEY", new)
    monkeypatch.setenv("MY_KEY_PREVIOUS", old)
    assert secrets_from_env(other) == [new.encode(), old.encode()]
