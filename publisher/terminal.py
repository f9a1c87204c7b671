"""Text that others wrote, made safe to print on an operator's terminal.

A bounce's Diagnostic-Code, a report's addresses, a subscriber's name: anyone can put control
characters in them. An ESC sequence (CSI, OSC) can retitle the window, rewrite what is on the
screen, or with OSC 52 write the clipboard; C1 controls (U+0080-U+009F) do the same on terminals
that read them; bidi controls reorder what the eye reads. `shown` escapes them all as `\\xNN` /
`\\uNNNN` (a tab and a line break too, so one field stays one field on one line); `shown_json`
escapes the ones `json.dumps` leaves alone, keeping the JSON valid.
"""

from __future__ import annotations

import re

# C0 and DEL, C1, and the bidi controls and line separators Unicode defines (ALM, LRM, RLM,
# LRE..RLO, LS, PS, LRI..PDI).
_OTHERS = "\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_ANY = re.compile(f"[\x00-\x1f{_OTHERS}]")
_BUT_LINES = re.compile(f"[\x00-\x08\x0b-\x1f{_OTHERS}]")  # all but tab and line feed
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\x1b": "\\x1b"}


def _escape(m: re.Match[str]) -> str:
    c = m.group(0)
    if c in _NAMED:
        return _NAMED[c]
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def shown(text: str) -> str:
    """`text` on one line with every control character escaped."""
    return _ANY.sub(_escape, text)


def shown_lines(text: str) -> str:
    """`text` with every control character escaped but line breaks and tabs (a whole message
    shown on a terminal)."""
    return _BUT_LINES.sub(_escape, text)


def shown_json(dumped: str) -> str:
    """A `json.dumps(..., ensure_ascii=False)` result with DEL, C1 and bidi controls written as
    JSON escapes (`json` escapes only C0)."""
    return _ANY.sub(lambda m: f"\\u{ord(m.group(0)):04x}", dumped)
