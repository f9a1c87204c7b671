"""How logs name a reader: by subscriber id and a masked address, never the whole address.

Logs go to journald and log shippers and must not carry the list, so at INFO and above a reader
is `#1234 (g…@example.com)`: enough to find the row (`publisher subscribers list`, the id) and
to see the provider, not enough to mail anyone. Operator tools that print to the terminal
(`bounces import`'s per-message lines, `subscribers list`) keep whole addresses.
"""

from __future__ import annotations

import re

# Something shaped like an address inside free text (an SMTP reply, a CSV problem line).
_ADDRESS = re.compile(
    r"[^\s<>()\[\]{}\"',;:]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+"
)


def mask_address(email: str) -> str:
    """`grace@example.com` -> `g…@example.com`: the first character and the domain."""
    local, at, domain = email.rpartition("@")
    if not at:
        return "…"
    return f"{local[:1]}…@{domain}"


def reader(subscriber_id: int | None, email: str) -> str:
    """A reader as logs name one: `#1234 (g…@example.com)`."""
    who = f"#{subscriber_id} " if subscriber_id is not None else ""
    return f"{who}({mask_address(email)})"


def mask_addresses(text: str) -> str:
    """`text` with every address in it masked (`mask_address`)."""
    return _ADDRESS.sub(lambda m: mask_address(m.group(0)), text)
