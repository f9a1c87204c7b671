"""The logging of `publisher serve`: no token and no whole address in any line."""

from __future__ import annotations

import copy
import logging
from typing import Any

from ..urls import TOKEN_PATH

REDACTED = "[token]"


def mask_address(email: str) -> str:
    """`ada@example.org` -> `a***@example.org`: enough for an operator to tell readers apart in
    a log, not enough to mail them."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}***@{domain}" if local else "***"


def redact(text: str) -> str:
    """`text` with the token of every token path replaced by REDACTED."""
    return TOKEN_PATH.sub(lambda m: f"/{m.group(1)}/{REDACTED}", text)


class RedactTokens(logging.Filter):
    """Redacts tokens from a log record (uvicorn's access log passes the path as an argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            args = record.args.items()
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in args}
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's default logging, with RedactTokens on every handler: no token in any line."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": RedactTokens}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_tokens")
    return config
