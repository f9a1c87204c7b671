"""DKIM faults end in one line before anything is sent; signatures are oversigned.

`[email.dkim]` is all three keys or none, its d= aligns with From (or says it need not), the key
is read and tried when the MessageFactory is set up, and the dry run reports and checks the
signature offline. Extra keys are generated here with openssl; only the fixture key is checked in.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
from click.testing import CliRunner

from publisher.cli import cli
from publisher.config import Config, dkim_aligned, load_config
from publisher.digest import parse_file
from publisher.dkim import public_key, verify_offline
from publisher.errors import ConfigError
from publisher.mailer import MessageFactory
from publisher.newsletter import render_newsletter

from .conftest import FIXTURES, ROOT
from .requires import requires

KEY = FIXTURES / "dkim" / "test.key"
PUB = FIXTURES / "dkim" / "test.pub"
SAMPLE = ROOT / "digests" / "2024" / "05" / "15.md"
OVERSIGNED = ("from", "to", "subject", "date", "message-id")
OVERSIGNED += ("list-unsubscribe", "list-unsubscribe-post")


def write_config(tmp_path: Path, dkim_lines: str, sender: str = "papers@example.org") -> Path:
    """A config on the shipped digests and subscribers, with this `[email.dkim]` body."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'[digests]\ninbox = "{ROOT / "digests"}"\n'
        f'[subscribers]\nfile = "{ROOT / "subscribers" / "subscribers.csv"}"\n'
        f'[state]\ndatabase = "{tmp_path / "state.sqlite3"}"\n'
        f'[email]\nfrom = "Daily Papers <{sender}>"\n'
        f"[email.dkim]\n{dkim_lines}\n",
        encoding="utf-8",
    )
    return path


def signed_lines(key: Path = KEY, domain: str = "example.org") -> str:
    return f'selector = "s1"\ndomain = "{domain}"\nkey_file = "{key}"'


def run_cli(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """`publisher ...` as a user runs it: a subprocess, its output and exit status. `prefix`:
    a command that runs it (setpriv, to run it as another user)."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "publisher.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PUBLISHER_SECRET": "__DMtJ_2YNIVwywDDCctwL0CKgbYxOmjxxzhlinC64w"},
    )


def assert_one_error_line(r: subprocess.CompletedProcess[str], cfg_path: Path, *needles: str):
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {cfg_path}: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


def dnsfunc_for(public_pem: Path):
    public = "".join(line for line in public_pem.read_text().splitlines() if "-----" not in line)

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return f"v=DKIM1; k=rsa; p={public}".encode()

    return dnsfunc


def factory(cfg: Config) -> MessageFactory:
    return MessageFactory(render_newsletter(parse_file(SAMPLE), cfg), cfg, b"test-secret")


# --- a partial section -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "missing"),
    [
        ('selector = "s1"\ndomain = "example.org"', ["key_file"]),
        (f'selector = "s1"\nkey_file = "{KEY}"', ["domain"]),
        (f'domain = "example.org"\nkey_file = "{KEY}"', ["selector"]),
        ('selector = "s1"', ["domain", "key_file"]),
        (f'key_file = "{KEY}"', ["selector", "domain"]),
        ('selector = "s1"\ndomain = "example.org"\nkey_file = ""', ["key_file"]),
    ],
)
def test_partial_dkim_section_names_the_missing_key_and_the_file(
    tmp_path: Path, lines: str, missing: list[str]
) -> None:
    path = write_config(tmp_path, lines)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    for key in missing:
        assert f"'email.dkim.{key}'" in message
    assert "\n" not in message


def test_partial_dkim_section_stops_the_cli_with_one_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'selector = "s1"\ndomain = "example.org"')
    out = tmp_path / "preview"
    r = run_cli("send", "--dry-run", "--config", str(path), "--out", str(out))
    assert_one_error_line(r, path, "'email.dkim.key_file' is missing")
    assert not out.exists()  # nothing rendered, let alone sent


def test_no_dkim_section_still_sends_unsigned(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, ""))
    assert not cfg.email.dkim.enabled
    assert not factory(cfg).build("ada@example.com").startswith(b"DKIM-Signature:")


# --- alignment ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("d", "from_domain", "aligned"),
    [
        ("example.org", "example.org", True),
        ("Example.ORG", "example.org.", True),
        ("example.org", "news.example.org", True),  # d= the parent of From
        ("mail.example.org", "example.org", True),  # d= a subdomain of From
        ("example.com", "example.org", False),
        ("ample.org", "example.org", False),  # a suffix of the text is not a parent domain
        ("mail.example.org", "news.example.org", False),  # siblings: allow_unaligned
        ("esp-mailer.net", "example.org", False),
    ],
)
def test_alignment_rule(d: str, from_domain: str, aligned: bool) -> None:
    assert dkim_aligned(d, from_domain) is aligned


def test_unaligned_domain_is_a_config_error_unless_allowed(tmp_path: Path) -> None:
    path = write_config(tmp_path, signed_lines(domain="esp-mailer.net"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: 'email.dkim.domain' 'esp-mailer.net'")
    assert "'example.org'" in message and "allow_unaligned" in message

    r = run_cli("send", "--dry-run", "--config", str(path), "--out", str(tmp_path / "p"))
    assert_one_error_line(r, path, "does not align with the From domain 'example.org'")

    path.write_text(path.read_text() + "allow_unaligned = true\n", encoding="utf-8")
    cfg = load_config(path)
    assert cfg.email.dkim.allow_unaligned
    raw = factory(cfg).build("ada@example.com")
    assert b"d=esp-mailer.net" in raw.split(b"\r\n\r\n", 1)[0]

    # the parent of the From domain aligns: no key needed
    cfg = load_config(write_config(tmp_path, signed_lines(), sender="papers@news.example.org"))
    assert dkim.verify(factory(cfg).build("ada@example.com"), dnsfunc=dnsfunc_for(PUB))


# --- the key, checked before any message -------------------------------------------------------


def _bad_keys(tmp_path: Path) -> dict[str, Path]:
    garbage = tmp_path / "garbage.key"
    garbage.write_text("this is not a key\n")
    truncated = tmp_path / "truncated.key"
    lines = KEY.read_text().splitlines()
    truncated.write_text("\n".join(lines[:4] + lines[-1:]) + "\n")
    return {
        "missing": tmp_path / "nope.key",
        "a folder": tmp_path,
        "garbage": garbage,
        "truncated": truncated,
        "the public key": PUB,
    }


@pytest.mark.parametrize("which", ["missing", "a folder", "garbage", "truncated", "the public key"])
def test_bad_key_is_one_config_error_at_setup(tmp_path: Path, which: str) -> None:
    key = _bad_keys(tmp_path)[which]
    cfg = load_config(write_config(tmp_path, signed_lines(key)))  # loading does not read it
    with pytest.raises(ConfigError) as info:
        factory(cfg)  # ...the factory does, before the first message
    message = str(info.value)
    assert message.startswith(f"{cfg.path}: 'email.dkim.key_file' {key} ")
    assert "\n" not in message
    assert "cannot be read" in message or "is not a usable private key" in message


@pytest.fixture
def public_folder() -> Iterator[Path]:
    """A folder any user can enter (pytest's tmp_path is its owner's only): for a command run
    as another user."""
    folder = Path(tempfile.mkdtemp(prefix="publisher-dkim-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_unreadable_key_file(public_folder: Path) -> None:
    """A key file its reader may not open is one line. Root opens any file, so as root (CI) the
    command runs as `nobody` (setpriv), for whom the mode-0 file is as unreadable as for anyone."""
    key = public_folder / "locked.key"
    key.write_bytes(KEY.read_bytes())
    key.chmod(0)
    path = write_config(public_folder, signed_lines(key))
    out = public_folder / "preview"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    as_nobody: tuple[str, ...] = ()
    if os.geteuid() == 0:
        as_nobody = (requires("setpriv"), "--reuid=nobody", "--regid=nogroup", "--clear-groups")
    r = run_cli("send", "--dry-run", "--config", str(path), "--out", str(out), prefix=as_nobody)
    assert_one_error_line(r, path, f"'email.dkim.key_file' {key} cannot be read: Permission denied")
    assert not list(out.glob("*.eml"))


def test_bad_key_stops_the_cli_with_one_line_naming_the_file(tmp_path: Path) -> None:
    key = _bad_keys(tmp_path)["garbage"]
    path = write_config(tmp_path, signed_lines(key))
    out = tmp_path / "preview"
    r = run_cli("send", "--dry-run", "--config", str(path), "--out", str(out))
    assert_one_error_line(r, path, f"'email.dkim.key_file' {key} is not a usable private key")
    assert "KeyFormatError" not in r.stderr
    assert not list(out.glob("*.eml"))


# --- oversigning -------------------------------------------------------------------------------


def _signed_message(tmp_path: Path) -> bytes:
    cfg = load_config(write_config(tmp_path, signed_lines()))
    return factory(cfg).build("ada@example.com", "Ada")


def _h_tag(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    signature = re.search(r"^DKIM-Signature:(.*?)(?=^\S)", head + "\r\nX", re.S | re.M).group(1)
    h = re.search(r"\bh=([^;]+)", re.sub(r"\s", "", signature)).group(1)
    return [name.lower() for name in h.split(":")]


def test_each_key_header_is_listed_twice_in_h(tmp_path: Path) -> None:
    names = _h_tag(_signed_message(tmp_path))
    for header in OVERSIGNED:
        assert names.count(header) == 2, names
    assert names.count("reply-to") == 1  # absent, and listed so that none can be added
    assert names.count("list-id") == 1


@pytest.mark.parametrize(
    "extra",
    [
        b"From: Daily Papers <papers@evil.example>",
        b"Subject: Your account is suspended",
        b"List-Unsubscribe: <https://evil.example/u>",
        b"Reply-To: phish@evil.example",
    ],
)
def test_a_header_added_in_transit_breaks_the_signature(tmp_path: Path, extra: bytes) -> None:
    raw = _signed_message(tmp_path)
    name = extra.split(b":")[0].decode().lower()
    # oversigned: h= names it once more than the message has it (dkimpy's verifier happens to
    # add an extra "from" by itself; other verifiers do not)
    has = sum(
        1
        for line in raw.split(b"\r\n\r\n")[0].split(b"\r\n")
        if line.lower().startswith(name.encode() + b":")
    )
    assert _h_tag(raw).count(name) == has + 1
    dnsfunc = dnsfunc_for(PUB)
    assert dkim.verify(raw, dnsfunc=dnsfunc)
    # above the signed headers, where a verifier without oversigning would skip it (h= is
    # matched from the bottom up) but many mail clients show the first one
    on_top = extra + b"\r\n" + raw
    assert not dkim.verify(on_top, dnsfunc=dnsfunc)
    after_signature = raw.replace(b"\r\nTo: ", b"\r\n" + extra + b"\r\nTo: ", 1)
    assert not dkim.verify(after_signature, dnsfunc=dnsfunc)


# --- the dry run -------------------------------------------------------------------------------


def test_dry_run_says_signed_and_verifies_offline(tmp_path: Path) -> None:
    path = write_config(tmp_path, signed_lines())
    out = tmp_path / "preview"
    result = CliRunner().invoke(
        cli, ["send", "--dry-run", "--config", str(path), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "dkim:       signed, selector s1, domain (d=) example.org" in result.output
    assert "dkim check: ok: verified offline" in result.output
    assert "s1._domainkey.example.org" in result.output
    eml = sorted(out.glob("*.eml"))[0].read_bytes()
    assert dkim.verify(eml, dnsfunc=dnsfunc_for(PUB))


def test_dry_run_says_unsigned(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["send", "--dry-run", "--config", str(ROOT / "config.toml"), "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert "dkim:       not signed" in result.output


def test_offline_check_catches_a_broken_signature(tmp_path: Path) -> None:
    raw = _signed_message(tmp_path)
    key = KEY.read_bytes()
    assert verify_offline(raw, key)[0]
    ok, why = verify_offline(raw.replace(b"/unsubscribe/", b"/unsubscribX/", 1), key)
    assert not ok and why


def test_public_half_matches_openssl(tmp_path: Path) -> None:
    key = tmp_path / "fresh.key"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    pub = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout"], check=True, capture_output=True, text=True
    ).stdout
    expected = "".join(line for line in pub.splitlines() if "-----" not in line)
    assert public_key(key.read_bytes()) == expected
    assert public_key(KEY.read_bytes()) == "".join(
        line for line in PUB.read_text().splitlines() if "-----" not in line
    )
