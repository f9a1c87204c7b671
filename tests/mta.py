"""Throwaway mail servers for the bounce tests: a real Postfix and a real Dovecot IMAP server,
each with its own configuration in a temporary folder, on a free loopback port, stopped and
deleted afterwards. Debian's `postfix` and `dovecot-imapd` packages; a test that needs one
skips when it is missing, except under CI=true where it fails (tests/requires.py).

The folders are made with mode 0755 outside pytest's private tmp tree: Postfix's daemons and
its virtual(8) delivery run as other users (`postfix`, `nobody`), which must reach them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .net import free_port, self_signed_cert
from .requires import requires


def _public_dir(prefix: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    return root


MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


class Postfix:
    """A Postfix of its own: `postfix -c DIR start` with its own main.cf/master.cf, queue and
    data directories, SMTP on 127.0.0.1:`port`, delivering with virtual(8) into Maildirs under
    `mail`: `mailboxes` maps a regexp on the recipient to a Maildir path relative to `mail`.
    A recipient no regexp matches is accepted at RCPT (smtpd_reject_unlisted_recipient = no)
    and bounced by Postfix itself afterwards ("User unknown in virtual mailbox table"), so the
    DSN goes to the envelope sender, as it does behind any relay."""

    def __init__(self, domains: list[str], mailboxes: dict[str, str]) -> None:
        self.binary = requires("postfix")
        self.root = _public_dir("publisher-postfix-")
        self.etc, self.mail = self.root / "etc", self.root / "mail"
        self.port = free_port()
        self.etc.mkdir()
        self.mail.mkdir()
        nobody, owner = pwd.getpwnam("nobody"), pwd.getpwnam("postfix")
        os.chown(self.mail, nobody.pw_uid, nobody.pw_gid)
        (self.root / "queue").mkdir(mode=0o755)  # root's; `postfix check` makes the rest
        (self.root / "data").mkdir(mode=0o700)
        os.chown(self.root / "data", owner.pw_uid, owner.pw_gid)
        (self.etc / "vmailbox").write_text(
            "".join(f"/{pattern}/ {box}\n" for pattern, box in mailboxes.items())
        )
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": self.root / "queue",
            "data_directory": self.root / "data",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "maillog_file": self.root / "maillog",
            "maillog_file_prefixes": self.root,
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": "mx.publisher.test",
            "mydomain": "publisher.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "relay_domains": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_reject_unlisted_recipient": "no",
            "virtual_mailbox_domains": ", ".join(domains),
            "virtual_mailbox_maps": f"regexp:{self.etc / 'vmailbox'}",
            "virtual_mailbox_base": self.mail,
            "virtual_uid_maps": f"static:{nobody.pw_uid}",
            "virtual_gid_maps": f"static:{nobody.pw_gid}",
            "recipient_delimiter": "+",
            "notify_classes": "",
            "biff": "no",
            "smtputf8_enable": "no",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
        }
        (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        (self.etc / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        self._postfix("check")
        self._postfix("start")
        self._wait_listening()

    def _postfix(self, command: str) -> None:
        run = subprocess.run(
            [self.binary, "-c", str(self.etc), command], capture_output=True, text=True, timeout=60
        )
        if run.returncode != 0:
            raise RuntimeError(f"postfix {command} failed: {run.stdout}{run.stderr}{self.log()}")

    def _wait_listening(self, timeout: float = 30) -> None:
        import socket

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(100).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"postfix did not answer on port {self.port}: {self.log()}")

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for(self, maildir: str, count: int = 1, timeout: float = 90) -> list[Path]:
        """The files in `mail/maildir/new` once there are `count` of them."""
        folder = self.mail / maildir / "new"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            files = sorted(folder.glob("*")) if folder.is_dir() else []
            if len(files) >= count:
                return files
            time.sleep(0.3)
        raise AssertionError(f"no {count} messages in {folder} after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        try:
            subprocess.run(
                [self.binary, "-c", str(self.etc), "stop"], capture_output=True, timeout=60
            )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class Dovecot:
    """A Dovecot IMAP server of its own: `dovecot -c FILE`, IMAPS (TLS from the first byte)
    on 127.0.0.1:`port` with a throwaway certificate (`cert`, for the client to verify), one
    user `user`/`password` whose mail is a Maildir under `root/mail`, stopped and deleted by
    `stop()`."""

    user, password = "bounces", "imap-test-password"

    def __init__(self) -> None:
        self.binary = requires("dovecot")
        self.root = _public_dir("publisher-dovecot-")
        self.port = free_port()
        self.cert, key = self_signed_cert(self.root)
        key.chmod(0o600)
        mail = self.root / "mail"
        mail.mkdir()
        nobody = pwd.getpwnam("nobody")
        os.chown(mail, nobody.pw_uid, nobody.pw_gid)
        (self.root / "users").write_text(f"{self.user}:{{PLAIN}}{self.password}\n")
        self.conf = self.root / "dovecot.conf"
        self.conf.write_text(
            f"""
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{self.cert}
ssl_key = <{key}
auth_mechanisms = plain
mail_location = maildir:{mail}/%u
first_valid_uid = {nobody.pw_uid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.root}/users
}}
userdb {{
  driver = static
  args = uid={nobody.pw_uid} gid={nobody.pw_gid} home={mail}/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""
        )
        # In the foreground (-F), a child of this process: stopped by terminating it.
        self.process = subprocess.Popen(
            [self.binary, "-F", "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "stderr.log").open("wb"),
        )
        self._wait_listening()

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _wait_listening(self, timeout: float = 30) -> None:
        import socket

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                err = (self.root / "stderr.log").read_text(errors="replace")
                raise RuntimeError(f"dovecot exited: {err}{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"dovecot did not listen on port {self.port}: {self.log()}")

    def client(self):  # noqa: ANN201
        import imaplib
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.cert))
        conn = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=ctx)
        conn.login(self.user, self.password)
        return conn

    def stop(self) -> None:
        try:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
