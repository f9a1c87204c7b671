"""The one Jinja environment for pages and emails.

Templates live in the project's `templates/` folder (or `[site] templates` to restyle without
touching Python). Autoescape is on for HTML and XML; StrictUndefined turns a typo into an error.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

from .caches import template_cache
from .config import Config
from .i18n import strings

BUILTIN_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def templates_dir(cfg: Config) -> Path:
    return cfg.site.templates or BUILTIN_TEMPLATES


_ESCAPED = ("html", "htm", "xml")  # autoescape by extension
_OPTIONS = {"trim_blocks": True, "lstrip_blocks": True, "keep_trailing_newline": True}


@lru_cache(maxsize=8)
def _env(folder: Path) -> jinja2.Environment:
    # Compiled templates are kept on disk (publisher/caches.py), in a folder named by every
    # option that changes the compiled code: add a new one to the dict given there.
    compiled = template_cache({**_OPTIONS, "autoescape": _ESCAPED, "undefined": "strict"})
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=jinja2.select_autoescape(enabled_extensions=_ESCAPED, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        bytecode_cache=compiled,
        **_OPTIONS,
    )
    return env


def jinja_env(cfg: Config) -> jinja2.Environment:
    """The shared environment; `t` (the fixed words for site.language) is a global."""
    env = _env(templates_dir(cfg))
    env.globals["t"] = strings(cfg.site.language)
    return env
