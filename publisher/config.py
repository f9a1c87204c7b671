"""config.toml -> frozen dataclasses.

Every section is a dataclass; every key has a type and (almost always) a default. Unknown keys
and wrong types raise ConfigError naming the file and the dotted key, so a typo never silently
falls back to a default. Relative paths are resolved against the config file's folder.

Secrets never live here: `[smtp] password_env` and `[web] secret_env` name environment variables.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
import zoneinfo
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .mailrules import split_template


@dataclass(frozen=True, slots=True)
class SiteConfig:
    title: str = "Daily Papers"
    base_url: str = "http://localhost:8000/"
    language: str = "ko"
    timezone: str = "Asia/Seoul"
    author: str = "publisher"
    description: str = "Daily summaries of research papers"
    # Folder of Jinja templates; unset means the project's own templates/.
    templates: Path | None = None


@dataclass(frozen=True, slots=True)
class DigestsConfig:
    inbox: Path = Path("digests")
    # A git repository to fetch the digests from (`publisher pull`, and `run` on every poll):
    # `inbox` is then a clone that publisher manages (reset to the remote branch each pull).
    git: str = ""
    git_branch: str = "main"
    # The folder inside the clone that holds the digests (the upstream's "paper_logs").
    git_path: str = ""

    @property
    def managed(self) -> bool:
        """Whether the inbox is a clone of `git` (only day-named files count as digests)."""
        return bool(self.git)

    @property
    def folder(self) -> Path:
        """The folder searched for digests: the inbox, or `git_path` inside the clone."""
        return self.inbox / self.git_path if self.git and self.git_path else self.inbox


@dataclass(frozen=True, slots=True)
class FeedConfig:
    output: Path = Path("public")
    max_items: int = 30
    entry_title: str = "Daily Papers {date}"
    # Hour of day (in site.timezone) a digest counts as published in the feeds.
    publish_hour: int = 8
    # What a feed entry carries: "summary" (the day's paper titles, each linked to its anchor on
    # the day page; small enough for FeedBurner's 512 KB) or "full" (every summary, as the page).
    content: str = "summary"
    # Build a Pagefind search index of the day pages (pagefind[bin]) and show a search box.
    search: bool = True


@dataclass(frozen=True, slots=True)
class DkimConfig:
    # All three or none: a partial section is an error, never a silent unsigned send.
    selector: str = ""
    domain: str = ""
    key_file: Path | None = None
    # Sign with a d= domain that does not align with the From domain (see dkim_aligned).
    allow_unaligned: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.selector and self.domain and self.key_file)


@dataclass(frozen=True, slots=True)
class EmailConfig:
    from_: str = "Daily Papers <papers@localhost>"
    subject: str = "Daily Papers {date}: {first_title}"
    # The weekly edition's subject: {week} (2026-W49) and {first_title} (the most voted paper).
    weekly_subject: str = "Weekly Papers {week}: {first_title}"
    reply_to: str = ""
    contact: str = ""
    list_id: str = ""
    unsubscribe_mailto: str = ""
    # VERP envelope sender, e.g. "bounces+{token}@example.org" (publisher/mailrules.py);
    # empty: the From address, as before.
    return_path: str = ""
    max_authors: int = 5
    max_html_bytes: int = 95_000  # of the HTML part as sent (base64), not decoded
    # Feedback-ID header (Gmail's feedback loop); {date} is the YYYYMMDD. Empty: derived.
    feedback_id: str = ""
    dkim: DkimConfig = field(default_factory=DkimConfig)


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str = ""
    port: int = 587
    security: str = "starttls"
    username: str = ""
    password_env: str = "PUBLISHER_SMTP_PASSWORD"
    connections: int = 4
    timeout: float = 30.0
    verify_tls: bool = True
    messages_per_connection: int = 100
    rate_limit: float = 0.0
    max_attempts: int = 5
    retry_base_seconds: float = 1.0
    outbox: Path = Path("outbox")


@dataclass(frozen=True, slots=True)
class SubscribersConfig:
    file: Path = Path("subscribers/subscribers.csv")
    check_deliverability: bool = False
    bounce_limit: int = 1


# `[schedule] weekly_day`: ISO weekday 1 (mon) to 7 (sun) is the index + 1.
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    send_at: str = "07:00"
    # The weekly edition (of the last complete ISO week) goes out on this day, at send_at.
    weekly_day: str = "mon"
    poll_seconds: float = 60.0
    max_age_days: int = 2
    send_on_arrival: bool = False
    misfire_grace_hours: float = 12.0
    # `run` retries a partial send's failed rows (4xx after max_attempts) this many times,
    # this many hours apart; then they are final for that digest.
    retry_failed_times: int = 3
    retry_failed_hours: float = 6.0
    # HH:MM in site.timezone: no digest dated today by then is a warning (status, alert).
    expect_by: str = ""


@dataclass(frozen=True, slots=True)
class StateConfig:
    database: str = "state/publisher.sqlite3"
    # How long a sender's claim on a batch of ledger rows lasts without renewal: another
    # sender takes over the rows of one that died (kill -9, a lost machine) after this long.
    lease_seconds: float = 60.0
    # Per-message ledger rows of an edition older than this many days (by its date, in
    # site.timezone) are folded into per-edition counts and deleted (`publisher compact`,
    # publisher/state/compaction.py); such an edition is never sent again.
    keep_ledger_days: int = 90


@dataclass(frozen=True, slots=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    secret_env: str = "PUBLISHER_SECRET"
    # Signup limits, kept in the database (shared by every `serve` process): confirmation mails
    # per client address (a token bucket) and the least time between two to one address.
    signups_per_client_per_hour: int = 10
    confirm_resend_minutes: int = 10


@dataclass(frozen=True, slots=True)
class BouncesConfig:
    """Inbound mail: bounces, complaints, mailto unsubscribes (publisher/bounces)."""

    # Soft bounces (mailbox full, expired in queue...) suppress after this many on distinct
    # days within the window; a digest delivered in between starts the count again.
    soft_limit: int = 3
    soft_window_days: int = 30
    # A VERP token whose digest is older than this is refused as expired (a mailto unsubscribe
    # token never expires, like the web link).
    token_max_age_days: int = 180
    # A bigger message is reported and left alone (not read, not kept).
    max_message_bytes: int = 10_000_000
    # A message is kept (for `publisher bounces show`) up to this size, with a note past it.
    keep_raw_bytes: int = 256 * 1024
    # `publisher bounces fetch`: an IMAP mailbox over TLS (port 993), certificate verified
    # (against `imap_cafile` when set, else the system's CAs).
    imap_host: str = ""
    imap_port: int = 993
    imap_user: str = ""
    imap_password_env: str = "PUBLISHER_IMAP_PASSWORD"
    imap_folder: str = "INBOX"
    # Processed messages are moved here; empty: deleted.
    imap_processed_folder: str = "Processed"
    imap_cafile: Path | None = None
    # `POST /webhooks/ses` on `publisher serve` (publisher/ses.py): the SNS topics whose
    # notifications it takes (SNS signs every topic's; a valid signature says nothing about
    # whose). Empty: the route answers 404.
    ses_topic_arns: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    # `GET /metrics` answers loopback clients, and any client that sends this variable's value
    # as `Authorization: Bearer ...`; everyone else gets 404.
    token_env: str = "PUBLISHER_METRICS_TOKEN"


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    # Where `publisher run` mails its alerts (publisher/health.py), at most one per kind a day;
    # empty: alerts are only logged and shown by `publisher status`.
    email: str = ""
    # This many failed pulls of [digests] git in a row are an alert.
    pull_failures: int = 6


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """One `[topics.NAME]` table: what readers see (`label`) and the regexes that pick papers."""

    name: str
    label: str
    match: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Config:
    path: Path = Path("config.toml")
    site: SiteConfig = field(default_factory=SiteConfig)
    digests: DigestsConfig = field(default_factory=DigestsConfig)
    feed: FeedConfig = field(default_factory=FeedConfig)
    email: EmailConfig = field(default_factory=EmailConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    subscribers: SubscribersConfig = field(default_factory=SubscribersConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    state: StateConfig = field(default_factory=StateConfig)
    web: WebConfig = field(default_factory=WebConfig)
    bounces: BouncesConfig = field(default_factory=BouncesConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # `[topics.NAME]` tables, in file order (publisher/topics.py matches papers to them).
    topics: tuple[TopicConfig, ...] = ()

    @property
    def topic_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.topics)

    @property
    def root(self) -> Path:
        """The folder relative paths are resolved against."""
        return self.path.parent

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.site.timezone)

    @property
    def database_url(self) -> str:
        """SQLAlchemy URL; a bare path means SQLite relative to the config folder."""
        db = self.state.database
        if "://" in db:
            return db
        return f"sqlite:///{(self.root / db).resolve()}"


# TOML keys that are Python keywords or otherwise renamed.
_ALIASES = {"from": "from_"}


def _toml_name(name: str) -> str:
    return name.rstrip("_")


def _build(cls: type, table: dict[str, Any], where: str, cfg_path: Path) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("path", "topics")}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        name = _ALIASES.get(key, key)
        dotted = f"{where}.{key}" if where else key
        if name not in known:
            allowed = ", ".join(sorted(_toml_name(n) for n in known))
            raise ConfigError(f"{cfg_path}: unknown key '{dotted}' (known here: {allowed})")
        kwargs[name] = _coerce(hints[name], value, dotted, cfg_path)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, dotted: str, cfg_path: Path) -> Any:
    optional = False
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{cfg_path}: '{dotted}' must be a table")
        return _build(tp, value, dotted, cfg_path)
    if optional and value == "":
        return None
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{cfg_path}: '{dotted}' must be a list of strings, not {value!r}")
        return tuple(value)
    ok = {
        str: isinstance(value, str),
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        Path: isinstance(value, str),
    }[tp]
    if not ok:
        expected = {
            str: "a string",
            bool: "true or false",
            int: "an integer",
            float: "a number",
            Path: "a path string",
        }[tp]
        raise ConfigError(f"{cfg_path}: '{dotted}' must be {expected}, not {value!r}")
    if tp is Path:
        return Path(value)
    if tp is float:
        return float(value)
    return value


def _resolve_paths(obj: Any, root: Path) -> Any:
    changes = {}
    for f in dataclasses.fields(obj):
        if f.name == "path":
            continue
        v = getattr(obj, f.name)
        if isinstance(v, Path):
            changes[f.name] = v if v.is_absolute() else (root / v)
        elif dataclasses.is_dataclass(v):
            changes[f.name] = _resolve_paths(v, root)
    return dataclasses.replace(obj, **changes)


_DKIM_KEYS = ("selector", "domain", "key_file")
_LABELS = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*$")


def dkim_aligned(dkim_domain: str, from_domain: str) -> bool:
    """DMARC relaxed alignment, simplified: one domain equals the other or is a subdomain of it.

    `example.org` aligns with `news.example.org` and the other way round; two sibling
    subdomains (`mail.example.org`, `news.example.org`), which DMARC itself would accept through
    the Public Suffix List, do not: set `[email.dkim] allow_unaligned = true` for those. Never
    says yes where DMARC says no (barring a d= that is itself a public suffix).
    """
    d = dkim_domain.strip().rstrip(".").lower()
    f = from_domain.strip().rstrip(".").lower()
    return bool(d and f) and (d == f or d.endswith("." + f) or f.endswith("." + d))


def check_dkim(cfg: Config) -> None:
    """`[email.dkim]`: all of selector, domain and key_file or none; d= aligned with From.

    The key itself is checked where it is used (MessageFactory), before any message is built.
    """
    d, p = cfg.email.dkim, cfg.path
    present = [k for k in _DKIM_KEYS if getattr(d, k)]
    if not present:
        return
    missing = [k for k in _DKIM_KEYS if not getattr(d, k)]
    if missing:
        names = " and ".join(f"'email.dkim.{k}'" for k in missing)
        raise ConfigError(
            f"{p}: {names} {'is' if len(missing) == 1 else 'are'} missing: DKIM signing needs "
            "selector, domain and key_file together (or none of them, to send unsigned)"
        )
    for key in ("selector", "domain"):
        value = getattr(d, key)
        if not _LABELS.match(value):
            raise ConfigError(f"{p}: 'email.dkim.{key}' is not a DNS name: {value!r}")
    addr = parseaddr(cfg.email.from_)[1]
    from_domain = addr.rpartition("@")[2] if "@" in addr else ""
    if not from_domain:
        raise ConfigError(f"{p}: 'email.from' has no address with a domain: {addr!r}")
    if not d.allow_unaligned and not dkim_aligned(d.domain, from_domain):
        raise ConfigError(
            f"{p}: 'email.dkim.domain' {d.domain!r} does not align with the From domain "
            f"{from_domain!r} (it must be the same domain, a parent or a subdomain of it, or "
            "DMARC fails); set 'email.dkim.allow_unaligned = true' to sign with it anyway"
        )


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
# Variables every shell, login or service manager sets: a secret read from one of them is known
# to every process and user on the machine (`secret_env = "PATH"`), so naming one is a mistake.
WELL_KNOWN_VARIABLES = frozenset(
    """PATH HOME USER LOGNAME SHELL PWD OLDPWD TERM LANG LANGUAGE LC_ALL LC_CTYPE LC_MESSAGES
    TZ TMPDIR TMP TEMP HOSTNAME HOST MAIL EDITOR VISUAL PAGER DISPLAY XAUTHORITY SHLVL _
    USERNAME UID EUID GROUPS PS1 PS2 IFS COLUMNS LINES SSH_AUTH_SOCK SSH_CLIENT SSH_CONNECTION
    SSH_TTY XDG_RUNTIME_DIR XDG_CONFIG_HOME XDG_DATA_HOME XDG_CACHE_HOME XDG_SESSION_ID
    DBUS_SESSION_BUS_ADDRESS INVOCATION_ID JOURNAL_STREAM NOTIFY_SOCKET LISTEN_FDS LISTEN_PID
    RUNTIME_DIRECTORY STATE_DIRECTORY CACHE_DIRECTORY LOGS_DIRECTORY CONFIGURATION_DIRECTORY
    VIRTUAL_ENV PYTHONPATH PYTHONHOME LD_LIBRARY_PATH LD_PRELOAD MANPATH INFOPATH
    """.split()  # noqa: SIM905
)


def _validate(cfg: Config) -> None:
    p = cfg.path
    try:
        zoneinfo.ZoneInfo(cfg.site.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        tz = cfg.site.timezone
        raise ConfigError(f"{p}: 'site.timezone' is not a known time zone: {tz!r}") from None
    if not re.match(r"^https?://", cfg.site.base_url):
        raise ConfigError(f"{p}: 'site.base_url' must start with http:// or https://")
    if cfg.smtp.security not in ("starttls", "ssl", "none"):
        raise ConfigError(
            f"{p}: 'smtp.security' must be starttls, ssl or none, not {cfg.smtp.security!r}"
        )
    if not _HHMM.match(cfg.schedule.send_at):
        raise ConfigError(f"{p}: 'schedule.send_at' must be HH:MM, not {cfg.schedule.send_at!r}")
    if cfg.schedule.weekly_day not in WEEKDAYS:
        raise ConfigError(
            f"{p}: 'schedule.weekly_day' must be one of {', '.join(WEEKDAYS)}, "
            f"not {cfg.schedule.weekly_day!r}"
        )
    for dotted, template, names in (
        ("email.subject", cfg.email.subject, ("date", "first_title")),
        ("email.weekly_subject", cfg.email.weekly_subject, ("week", "first_title")),
    ):
        try:
            template.format(**dict.fromkeys(names, ""))
        except (KeyError, IndexError, ValueError) as exc:
            allowed = " and ".join(f"{{{n}}}" for n in names)
            raise ConfigError(f"{p}: '{dotted}' may use only {allowed}: {exc}") from None
    if cfg.schedule.expect_by and not _HHMM.match(cfg.schedule.expect_by):
        raise ConfigError(
            f"{p}: 'schedule.expect_by' must be HH:MM or empty, not {cfg.schedule.expect_by!r}"
        )
    if cfg.alerts.email and "@" not in parseaddr(cfg.alerts.email)[1]:
        raise ConfigError(f"{p}: 'alerts.email' is not an address: {cfg.alerts.email!r}")
    check_keep_ledger(cfg)
    check_database(cfg)
    for dotted, v in (
        ("feed.max_items", cfg.feed.max_items),
        ("smtp.connections", cfg.smtp.connections),
        ("smtp.port", cfg.smtp.port),
        ("smtp.max_attempts", cfg.smtp.max_attempts),
        ("web.signups_per_client_per_hour", cfg.web.signups_per_client_per_hour),
    ):
        if v < 1:
            raise ConfigError(f"{p}: '{dotted}' must be at least 1, not {v}")
    for dotted, n in (
        ("schedule.retry_failed_times", cfg.schedule.retry_failed_times),
        ("schedule.retry_failed_hours", cfg.schedule.retry_failed_hours),
    ):
        if n < 0:
            raise ConfigError(f"{p}: '{dotted}' must not be negative, not {n}")
    if cfg.web.confirm_resend_minutes < 0:
        raise ConfigError(f"{p}: 'web.confirm_resend_minutes' must not be negative")
    for dotted, variable in (
        ("web.secret_env", cfg.web.secret_env),
        ("smtp.password_env", cfg.smtp.password_env),
        ("bounces.imap_password_env", cfg.bounces.imap_password_env),
    ):
        if variable.upper() in WELL_KNOWN_VARIABLES:
            raise ConfigError(
                f"{p}: '{dotted}' names ${variable}, a variable every process on the machine "
                "has, not a secret; name a variable of your own"
            )
    if not 0 <= cfg.feed.publish_hour <= 23:
        raise ConfigError(f"{p}: 'feed.publish_hour' must be between 0 and 23")
    if cfg.feed.content not in ("summary", "full"):
        raise ConfigError(f"{p}: 'feed.content' must be summary or full, not {cfg.feed.content!r}")
    check_dkim(cfg)
    check_bounces(cfg)
    check_git(cfg)


# The state databases publisher runs on (publisher/state/ is written for these two: ON CONFLICT,
# the ledger's partitions, the sent marks' own paths), by SQLAlchemy URL scheme; PostgreSQL's
# driver is psycopg 3, which `postgresql://` means to SQLAlchemy 2.1 too.
DATABASE_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg")


def check_database(cfg: Config) -> None:
    """`[state] database`: a path (SQLite) or a URL of a database publisher runs on. Another
    URL would fail later with a driver's traceback; the line names the scheme only, never the
    URL, which may hold a password."""
    db = cfg.state.database
    if "://" not in db:
        return
    scheme = db.split("://", 1)[0].lower()
    if scheme not in DATABASE_SCHEMES:
        raise ConfigError(
            f"{cfg.path}: 'state.database' must be a path (SQLite) or a "
            f"postgresql+psycopg://user@host/db URL, not a {scheme}:// URL"
        )


def check_keep_ledger(cfg: Config) -> None:
    """`[state] keep_ledger_days`: at least a week, and longer than `schedule.max_age_days`
    (an edition `run` may still send automatically must keep its ledger rows)."""
    keep, max_age = cfg.state.keep_ledger_days, cfg.schedule.max_age_days
    if keep < 7:
        raise ConfigError(f"{cfg.path}: 'state.keep_ledger_days' must be at least 7, not {keep}")
    if keep <= max_age:
        raise ConfigError(
            f"{cfg.path}: 'state.keep_ledger_days' ({keep}) must be more than "
            f"'schedule.max_age_days' ({max_age})"
        )


def check_git(cfg: Config) -> None:
    """`[digests] git`, `git_branch`, `git_path`: nothing git could read as an option, and a
    subfolder that stays inside the clone."""
    d, p = cfg.digests, cfg.path
    if cfg.alerts.pull_failures < 1:
        raise ConfigError(f"{p}: 'alerts.pull_failures' must be at least 1")
    if not d.git:
        return
    if d.git.startswith("-") or any(c.isspace() for c in d.git):
        raise ConfigError(f"{p}: 'digests.git' is not a repository URL: {d.git!r}")
    if not d.git_branch or d.git_branch.startswith("-") or any(c.isspace() for c in d.git_branch):
        raise ConfigError(f"{p}: 'digests.git_branch' is not a branch name: {d.git_branch!r}")
    sub = Path(d.git_path)
    if sub.is_absolute() or ".." in sub.parts or sub.parts[:1] == (".git",):
        raise ConfigError(
            f"{p}: 'digests.git_path' must be a folder inside the clone, not {d.git_path!r}"
        )


def check_bounces(cfg: Config) -> None:
    """`[email] return_path`, a `{token}` mailto, and the `[bounces]` numbers."""
    p = cfg.path
    for dotted, value in (
        ("email.return_path", cfg.email.return_path),
        ("email.unsubscribe_mailto", cfg.email.unsubscribe_mailto),
    ):
        if dotted == "email.unsubscribe_mailto" and "{token}" not in value:
            continue
        if not value:
            continue
        target = value.removeprefix("mailto:").partition("?")[0]
        try:
            split_template(target)
        except ValueError as exc:
            raise ConfigError(f"{p}: '{dotted}' {exc}, not {value!r}") from None
    for dotted, v in (
        ("bounces.soft_limit", cfg.bounces.soft_limit),
        ("bounces.soft_window_days", cfg.bounces.soft_window_days),
        ("bounces.max_message_bytes", cfg.bounces.max_message_bytes),
        ("bounces.keep_raw_bytes", cfg.bounces.keep_raw_bytes),
        ("bounces.imap_port", cfg.bounces.imap_port),
    ):
        if v < 1:
            raise ConfigError(f"{p}: '{dotted}' must be at least 1, not {v}")


# A topic's name is in URLs (/topics/NAME/), CSV cells (`;`-separated) and CLI lists (`,`).
TOPIC_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


def _topics(table: Any, cfg_path: Path) -> tuple[TopicConfig, ...]:
    """`[topics.NAME]` tables -> TopicConfig, each regex compiled once here to name a bad one."""
    if not isinstance(table, dict):
        raise ConfigError(f"{cfg_path}: 'topics' must be a table of [topics.NAME] tables")
    out = []
    for name, body in table.items():
        where = f"topics.{name}"
        if not TOPIC_NAME.match(name):
            raise ConfigError(
                f"{cfg_path}: '{where}': a topic name is 1 to 40 lower-case letters, digits "
                "or '-', starting with a letter or digit"
            )
        if not isinstance(body, dict):
            raise ConfigError(f"{cfg_path}: '{where}' must be a table")
        unknown = sorted(set(body) - {"label", "match"})
        if unknown:
            raise ConfigError(
                f"{cfg_path}: unknown key '{where}.{unknown[0]}' (known here: label, match)"
            )
        label = body.get("label", name)
        if not isinstance(label, str) or not label.strip():
            raise ConfigError(f"{cfg_path}: '{where}.label' must be a non-empty string")
        match = body.get("match", [])
        if not isinstance(match, list) or not all(isinstance(m, str) for m in match):
            raise ConfigError(f"{cfg_path}: '{where}.match' must be a list of strings")
        if not [m for m in match if m.strip()]:
            raise ConfigError(
                f"{cfg_path}: '{where}.match' is empty: a topic needs at least one pattern"
            )
        for i, pattern in enumerate(match):
            if not pattern.strip():
                raise ConfigError(f"{cfg_path}: '{where}.match[{i}]' is an empty pattern")
            try:
                re.compile(pattern, re.IGNORECASE)
            except re.error as exc:
                raise ConfigError(
                    f"{cfg_path}: '{where}.match[{i}]' is not a valid regular expression "
                    f"({exc}): {pattern!r}"
                ) from None
        out.append(TopicConfig(name=name, label=label.strip(), match=tuple(match)))
    return tuple(out)


def load_config(path: str | os.PathLike[str] = "config.toml") -> Config:
    """Read and validate a config file; every problem is a ConfigError naming file and key."""
    cfg_path = Path(path).resolve()
    try:
        raw = cfg_path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{cfg_path}: config file not found (use --config PATH)") from None
    except OSError as exc:
        raise ConfigError(f"{cfg_path}: cannot read config file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{cfg_path}: config file is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{cfg_path}: invalid TOML: {exc}") from None
    topics = _topics(data.pop("topics", {}), cfg_path)
    cfg = _build(Config, data, "", cfg_path)
    cfg = dataclasses.replace(cfg, path=cfg_path, topics=topics)
    cfg = _resolve_paths(cfg, cfg_path.parent)
    _validate(cfg)
    return cfg


def default_config(root: Path) -> Config:
    """A config with every default, rooted at `root` (used by tests and tools)."""
    return _resolve_paths(Config(path=(root / "config.toml").resolve()), root.resolve())


def smtp_password(cfg: Config) -> str | None:
    """The SMTP password from the environment variable named by smtp.password_env."""
    return os.environ.get(cfg.smtp.password_env) if cfg.smtp.password_env else None
