"""What the library's modules promise to export: every name in a module's `__all__` is bound,
so `from publisher.x import *` works."""

from __future__ import annotations

import importlib
import pkgutil

import publisher

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(publisher.__path__, "publisher.")
    if ".migrations" not in info.name  # Alembic's env.py and revisions run only under Alembic
)


def test_every_name_in_all_is_bound() -> None:
    unbound = {}
    for name in MODULES:
        module = importlib.import_module(name)
        missing = [n for n in getattr(module, "__all__", ()) if not hasattr(module, n)]
        if missing:
            unbound[name] = missing
    assert unbound == {}, f"__all__ names what the module never binds: {unbound}"


def test_star_import_of_the_state_package() -> None:
    namespace: dict[str, object] = {}
    exec("from publisher.state import *", namespace)
    assert "Store" in namespace
