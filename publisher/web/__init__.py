"""`publisher serve`: the public web side.

- The static archive from `[feed] output` (pages, feeds with their own content types, ETag and
  Last-Modified with 304s). Dotfiles (the private `.build-manifest.json`) and anything outside the
  folder answer 404.
- Double opt-in: GET /subscribe shows a form; POST /subscribe stores the address as pending and
  mails `{base_url}confirm/TOKEN`; GET /confirm/TOKEN shows a button and changes nothing (mail
  scanners fetch every link), its POST makes the address active. The answer to a valid
  address is the same page whether or not it is already on the list, and the mail is
  rate-limited per address and per client, in the database: it survives restarts, and any
  number of `publisher serve` processes on one database behave as one.
- /unsubscribe/TOKEN: GET shows a button and never changes anything (mail scanners prefetch
  links); POST, including RFC 8058's one-click `List-Unsubscribe=One-Click`, unsubscribes and
  suppresses the address and answers 200 with no cookie and no redirect, however often.
- /preferences/TOKEN: status, subscribe again, change the name, a JSON copy of what is stored,
  and "delete my data" (the address then survives only as a suppression hash).
- Every response carries the security headers (`SecurityHeaders`: Content-Security-Policy,
  nosniff, frame-ancestors 'none', a Referrer-Policy); token pages are never cached and send no
  Referer. `log_config()` is `publisher serve`'s logging: the access log shows no token.

Tokens (publisher/tokens.py) name a subscriber id, never an address; the old form that earlier
releases mailed (the address in clear) still verifies, as do tokens signed with a previous
secret (`<secret_env>_PREVIOUS`).

The store is the one source of truth for who is mailed, so an unsubscribe here is honoured by the
very next `queue_pending`/`pending_for`, whatever process runs the send.

The files: `app.py` (the endpoints, `create_app`), `security.py` (the headers), `logs.py`
(token redaction), `ratelimit.py` (the signup limits' keys), `forms.py` (form fields, a
reader's choice) and `archive.py` (the static files).
"""

from ..urls import TOKEN_PATH
from .app import CONFIRM_MAX_AGE, ExpiredLink, WebSide, create_app
from .archive import ArchiveFiles, accepted_encodings
from .forms import WEB_CADENCES
from .logs import REDACTED, log_config, mask_address, redact
from .ratelimit import MAILBOX_BURST, MAILBOX_REFILL
from .security import content_security_policy, security_headers

__all__ = [
    "CONFIRM_MAX_AGE",
    "MAILBOX_BURST",
    "MAILBOX_REFILL",
    "REDACTED",
    "TOKEN_PATH",
    "WEB_CADENCES",
    "ArchiveFiles",
    "ExpiredLink",
    "WebSide",
    "accepted_encodings",
    "content_security_policy",
    "create_app",
    "log_config",
    "mask_address",
    "redact",
    "security_headers",
]
