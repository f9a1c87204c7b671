"""`POST /webhooks/ses` (issue 22, "Amazon SES, read properly") over real HTTP, the app under
uvicorn on loopback: SNS messages signed here with a certificate made here (SignatureVersion 1
and 2), the signing certificate and the SubscribeURL served over real HTTPS by a loopback
server whose certificate a test CA signed. The hook that trusts that server instead of
sns.<region>.amazonaws.com is the test-only pair of variables publisher/ses.py documents.

What is checked: a notification acts only on the reader the ledger sent the message to (our
Message-ID, or SES's id in the 250 reply), never on an address only its JSON names; forged,
tampered, untrusted-URL and foreign-topic messages are refused and fetch nothing untrusted; a
subscription is confirmed by fetching its SubscribeURL; a repeat changes nothing."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from publisher.config import Config
from publisher.state import Store
from publisher.state.schema import ledger
from publisher.tokens import Signer, ledger_message_id, message_ledger_ids
from publisher.web import create_app

from .bounce_helpers import add, stored_events
from .statehelpers import suppression_reason
from .webhelpers import SECRET, live_server, web_config

TOPIC = "arn:aws:sns:eu-west-1:123456789012:papers-ses"
DAY = dt.date.today() - dt.timedelta(days=1)
OUR_ID = "<digest.1a2b3c4d@papers.example.org>"
SES_ID = "0102018f7a1b2c3d-4e5f6a7b-8c9d-0e1f-2a3b-4c5d6e7f8a9b-000000"


# -- certificates and the loopback "SNS" -------------------------------------------------------


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _cert(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: x509.Certificate | None = None,
    issuer_key: rsa.RSAPrivateKey | None = None,
    *,
    ca: bool = False,
    ip: str | None = None,
) -> x509.Certificate:
    import ipaddress

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclasses.dataclass
class FakeSns:
    base: str  # https://127.0.0.1:PORT
    cert_url: str
    signing_key: rsa.RSAPrivateKey
    hits: list[str]


@contextmanager
def fake_sns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSns]:
    """An HTTPS server on loopback serving the signing certificate and the SubscribeURL, with a
    certificate from a CA made here; the test-only variables point publisher/ses.py at it."""
    ca_key, srv_key, signing_key = _key(), _key(), _key()
    ca = _cert("Test SNS CA", ca_key, ca=True)
    srv = _cert("127.0.0.1", srv_key, ca, ca_key, ip="127.0.0.1")
    signing = _cert("sns.amazonaws.com (test)", signing_key)
    (tmp_path / "ca.pem").write_bytes(_pem(ca))
    (tmp_path / "srv.pem").write_bytes(
        _pem(srv)
        + srv_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    hits: list[str] = []
    pem = _pem(signing)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            hits.append(self.path)
            body = pem if self.path.endswith(".pem") else b"<ConfirmSubscriptionResponse/>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "srv.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host = f"127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("PUBLISHER_TEST_SNS_HOST", host)
    monkeypatch.setenv("PUBLISHER_TEST_SNS_CAFILE", str(tmp_path / "ca.pem"))
    from publisher import ses

    ses._CERT_CACHE.clear()  # noqa: SLF001 - each test has its own certificate
    try:
        yield FakeSns(
            f"https://{host}",
            f"https://{host}/SimpleNotificationService-test.pem",
            signing_key,
            hits,
        )
    finally:
        server.shutdown()
        server.server_close()


# -- SNS messages as AWS signs them --------------------------------------------------------------


def _to_sign(msg: dict[str, str]) -> bytes:
    """AWS's documented string to sign: these fields, in this order, when present."""
    if msg["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    return "".join(f"{n}\n{msg[n]}\n" for n in names if n in msg).encode()


def signed(sns: FakeSns, msg: dict[str, str], version: str = "1", key=None) -> dict[str, str]:  # noqa: ANN001
    msg = {
        "MessageId": "a1b2c3d4-0000-4000-8000-000000000001",
        "TopicArn": TOPIC,
        "Timestamp": "2024-05-15T07:00:00.000Z",
        "SignatureVersion": version,
        "SigningCertURL": sns.cert_url,
        **msg,
    }
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 - SNS v1
    signature = (key or sns.signing_key).sign(_to_sign(msg), padding.PKCS1v15(), algorithm)
    msg["Signature"] = base64.b64encode(signature).decode()
    return msg


def ses_bounce(
    rcpt: str, *, message_id: str = OUR_ID, ses_id: str = "x", kind: str = "Bounce"
) -> str:
    mail = {
        "timestamp": "2024-05-15T06:00:00.000Z",
        "source": "papers@papers.example.org",
        "messageId": ses_id,
        "destination": [rcpt],
        "headers": [{"name": "Message-ID", "value": message_id}, {"name": "To", "value": rcpt}],
        "commonHeaders": {"messageId": message_id, "to": [rcpt]},
    }
    if kind == "Complaint":
        body = {
            "complaint": {
                "complainedRecipients": [{"emailAddress": rcpt}],
                "complaintFeedbackType": "abuse",
                "timestamp": "2024-05-15T07:00:00.000Z",
                "feedbackId": "f1",
            }
        }
    else:
        body = {
            "bounce": {
                "bounceType": "Permanent",
                "bounceSubType": "General",
                "bouncedRecipients": [
                    {
                        "emailAddress": rcpt,
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }
                ],
                "timestamp": "2024-05-15T07:00:00.000Z",
                "feedbackId": "f1",
            }
        }
    return json.dumps({"notificationType": kind, "mail": mail, **body})


def notification(sns: FakeSns, message: str, version: str = "1", **kw: str) -> dict[str, str]:
    return signed(sns, {"Type": "Notification", "Message": message, **kw}, version)


# -- the app --------------------------------------------------------------------------------------


def _config(tmp_path: Path, topics: tuple[str, ...] = (TOPIC,)) -> Config:
    cfg = web_config(tmp_path, "http://127.0.0.1/")
    return dataclasses.replace(
        cfg,
        email=dataclasses.replace(cfg.email, return_path="bounces+{token}@papers.example.org"),
        bounces=dataclasses.replace(cfg.bounces, ses_topic_arns=topics),
    )


@contextmanager
def app_for(cfg: Config) -> Iterator[tuple[str, Store]]:
    store = Store.open(cfg)
    try:
        with live_server(
            lambda base: create_app(cfg, secret=SECRET, store=store, sender=lambda *a: None)
        ) as base:
            yield base, store
    finally:
        store.close()


def sent(store: Store, ids: dict[str, int], email: str, reply: str) -> str:
    """A ledger row of DAY sent to `email` with the server's `reply`; returns the Message-ID
    that message went out with (publisher/mailer.py signs the row's id into it)."""
    store.ensure_ledger_partition(DAY)
    with store.engine.begin() as conn:
        row_id = conn.execute(
            ledger.insert().values(
                digest_date=DAY,
                subscriber_id=ids[email],
                status="sent",
                attempts=1,
                final=False,
                last_reply=reply,
                updated_at=dt.datetime.now(),
            )
        ).inserted_primary_key[0]
    return ledger_message_id(Signer(SECRET, "message"), row_id, DAY, "papers.example.org")


def post(base: str, msg: dict[str, str]) -> httpx.Response:
    return httpx.post(
        base + "webhooks/ses",
        content=json.dumps(msg),
        headers={"x-amz-sns-message-type": msg["Type"], "content-type": "text/plain"},
        timeout=30,
    )


# -- tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_bounce_acts_on_the_reader_the_ledger_sent_that_message_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    cfg = _config(tmp_path)
    with fake_sns(tmp_path, monkeypatch) as sns, app_for(cfg) as (base, store):
        ids = add(store, "reader@example.net", "bystander@example.net")
        ours = sent(store, ids, "reader@example.net", "250 Ok something-else")
        # The JSON names an alias the reader's mail was forwarded to: the ledger decides.
        msg = notification(sns, ses_bounce("alias@forward.example", message_id=ours), version)
        r = post(base, msg)
        assert r.status_code == 200, r.text
        assert store.get("reader@example.net").status == "bounced"
        assert store.is_suppressed("reader@example.net")
        assert store.get("bystander@example.net").status == "active"
        (event,) = stored_events(cfg, "hard")
        assert (event.subscriber_id, event.digest_date) == (ids["reader@example.net"], DAY)
        assert event.cause == "userunknown" and event.status == "5.1.1"
        assert event.source == f"sns:{msg['MessageId']}"
        # SNS retries: the same message again changes nothing
        assert post(base, msg).status_code == 200
        assert len(stored_events(cfg)) == 1
        assert [h for h in sns.hits if h.endswith(".pem")] == [
            "/SimpleNotificationService-test.pem"
        ]


def test_ses_own_message_id_maps_through_its_250_reply_and_a_complaint_unsubscribes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(tmp_path)
    with fake_sns(tmp_path, monkeypatch) as sns, app_for(cfg) as (base, store):
        ids = add(store, "reader@example.net")
        sent(store, ids, "reader@example.net", f"250 Ok {SES_ID}")
        message = ses_bounce(
            "reader@example.net", message_id="<not-ours@x>", ses_id=SES_ID, kind="Complaint"
        )
        assert post(base, notification(sns, message, "2")).status_code == 200
        assert store.get("reader@example.net").status == "unsubscribed"
        assert suppression_reason(store, "reader@example.net") == "complaint"
        (event,) = stored_events(cfg, "complaint")
        assert event.cause == "feedback"


def test_a_notification_about_no_message_we_sent_acts_on_nobody(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(tmp_path)
    with fake_sns(tmp_path, monkeypatch) as sns, app_for(cfg) as (base, store):
        add(store, "reader@example.net")
        # Genuinely signed, our topic, naming a reader, but no Message-ID the ledger knows.
        for n, kind in enumerate(("Bounce", "Complaint")):
            message = ses_bounce("reader@example.net", message_id=f"<x{n}@y>", kind=kind)
            msg = notification(sns, message, MessageId=f"m-{n}")
            assert post(base, msg).status_code == 200
        assert store.get("reader@example.net").status == "active"
        assert not store.is_suppressed("reader@example.net")
        claimed = [(e.email, e.reported_kind) for e in stored_events(cfg, "unverified")]
        assert claimed == [("reader@example.net", "hard"), ("reader@example.net", "complaint")]


def _forgeries(sns: FakeSns) -> dict[str, dict[str, str]]:
    good = notification(sns, ses_bounce("reader@example.net"))
    tampered = dict(good, Message=ses_bounce("bystander@example.net"))
    other_key = signed(sns, {"Type": "Notification", "Message": good["Message"]}, key=_key())
    # a valid signature whose certificate URL is not SNS's: refused before any fetch
    evil_urls = {
        "http": sns.cert_url.replace("https://", "http://"),
        "lookalike": "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        "path": "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem",
    }
    out = {"tampered": tampered, "other_key": other_key}
    for name, url in evil_urls.items():
        out[f"cert_{name}"] = dict(good, SigningCertURL=url)
    out["foreign_topic"] = signed(
        sns,
        {"Type": "Notification", "Message": good["Message"], "TopicArn": TOPIC + "-theirs"},
    )
    out["unknown_version"] = dict(good, SignatureVersion="3")
    out["no_signature"] = {k: v for k, v in good.items() if k != "Signature"}
    return out


def test_forged_tampered_or_foreign_messages_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(tmp_path)
    with fake_sns(tmp_path, monkeypatch) as sns, app_for(cfg) as (base, store):
        ids = add(store, "reader@example.net", "bystander@example.net")
        sent(store, ids, "reader@example.net", "250 Ok x")
        for name, msg in _forgeries(sns).items():
            r = post(base, msg)
            assert r.status_code == 403, (name, r.status_code, r.text)
        assert not [h for h in sns.hits if not h.endswith(".pem")]
        assert store.get("reader@example.net").status == "active"
        assert stored_events(cfg) == []
        bad = httpx.post(base + "webhooks/ses", content=b"{not json", timeout=30)
        assert bad.status_code == 403


def test_a_subscription_is_confirmed_by_fetching_its_url_and_only_on_the_trusted_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(tmp_path)
    with fake_sns(tmp_path, monkeypatch) as sns, app_for(cfg) as (base, _):
        confirm = f"{sns.base}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=t0k"
        msg = signed(
            sns,
            {
                "Type": "SubscriptionConfirmation",
                "Message": "You have chosen to subscribe to the topic.",
                "SubscribeURL": confirm,
                "Token": "t0k",
            },
            "2",
        )
        r = post(base, msg)
        assert r.status_code == 200 and "confirmed" in r.text
        assert f"/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=t0k" in sns.hits
        elsewhere = signed(
            sns,
            {
                "Type": "SubscriptionConfirmation",
                "Message": "m",
                "SubscribeURL": "https://evil.example/confirm",
                "Token": "t1",
                "MessageId": "m-2",
            },
        )
        assert post(base, elsewhere).status_code == 403


def test_the_route_is_off_without_topics(tmp_path: Path) -> None:
    cfg = _config(tmp_path, topics=())
    with app_for(cfg) as (base, _):
        assert httpx.post(base + "webhooks/ses", content=b"{}", timeout=30).status_code == 404


def test_the_trusted_url_rule_without_the_test_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    from publisher.ses import trusted_url

    monkeypatch.delenv("PUBLISHER_TEST_SNS_HOST", raising=False)
    assert trusted_url("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem")
    assert trusted_url("https://sns.cn-north-1.amazonaws.com.cn/x.pem")
    for url in (
        "http://sns.eu-west-1.amazonaws.com/x.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/x.pem",
        "https://user@sns.eu-west-1.amazonaws.com/x.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.example/x.pem",
        "https://evil.example/sns.eu-west-1.amazonaws.com/x.pem",
        "https://s3.amazonaws.com/x.pem",
        "https://127.0.0.1/x.pem",
    ):
        assert not trusted_url(url), url


def test_our_message_id_names_its_ledger_row_and_a_forged_one_nobody(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    with Store.open(cfg) as store:
        ids = add(store, "reader@example.net")
        ours = sent(store, ids, "reader@example.net", f"250 Ok {SES_ID}")
        row_ids = message_ledger_ids([SECRET], [ours])
        found = store.ledger_by_message_id(row_ids)
        assert found is not None and found.subscriber_id == ids["reader@example.net"]
        assert store.ledger_by_message_id([], [SES_ID]) == found
        # Another row's id with a made-up signature, another key's signature, a foreign id.
        day, _, rest = ours.strip("<>").partition(".")
        token = rest.partition("@")[0]
        forged = f"<{day}.{token[:-2]}{'AA' if token[-2:] != 'AA' else 'BB'}@papers.example.org>"
        other = ledger_message_id(Signer(b"k" * 32, "message"), row_ids[0], DAY, "x.example")
        assert message_ledger_ids([SECRET], [forged, other, "<unknown@x>"]) == []
        assert store.ledger_by_message_id([], ["nope"]) is None
