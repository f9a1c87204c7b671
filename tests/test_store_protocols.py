"""`Store` satisfies each narrow Protocol its callers are typed against
(publisher/state/protocols.py): every member exists with the very parameters, defaults and
annotations, so a caller typed against a protocol may be handed the real Store."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from publisher.config import load_config
from publisher.state import Store
from publisher.state import protocols as p

PROTOCOLS = [
    p.LedgerStore,
    p.SubscribersStore,
    p.PublicationsStore,
    p.InboundStore,
    p.WebStore,
    p.PublishStore,
]


def members(protocol: type) -> dict[str, object]:
    out: dict[str, object] = {}
    for klass in reversed(protocol.__mro__):
        if klass is object or not getattr(klass, "_is_protocol", False):
            continue
        out.update({k: v for k, v in vars(klass).items() if inspect.isfunction(v) and k[0] != "_"})
    return out


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda c: c.__name__)
def test_store_has_every_method_of_the_protocol_with_its_signature(protocol: type) -> None:
    methods = members(protocol)
    assert methods, protocol
    for name, declared in methods.items():
        real = getattr(Store, name, None)
        assert real is not None, f"Store has no {name} ({protocol.__name__})"
        want, have = inspect.signature(declared), inspect.signature(real)
        assert list(want.parameters.values()) == list(have.parameters.values()), name
        if name != "lock":  # a @contextmanager: Iterator[None] in, a context manager out
            assert want.return_annotation == have.return_annotation, name


@pytest.mark.parametrize("protocol", [p.WebStore, p.PublishStore], ids=lambda c: c.__name__)
def test_store_has_the_attributes_of_the_protocol(protocol: type, tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        f'[state]\ndatabase = "sqlite:///{tmp_path / "state.db"}"\n', encoding="utf-8"
    )
    with Store.open(load_config(tmp_path / "config.toml")) as store:
        for name in protocol.__annotations__:
            assert hasattr(store, name), name
