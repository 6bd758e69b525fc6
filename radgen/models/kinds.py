"""Component registries: a recipe's `kind:` value → the function that builds that component.

`radgen/models/registry.py` holds *architecture configs* (copies of hub `config.json` files); this
module holds *builders*. The two are separate because they change for different reasons: a new hub
id adds a config there, a new kind of component adds a builder here.

A kind registers itself where it is defined, with the decorator of its registry (timm's
`register_model` pattern), so adding one touches only the file that defines it:

    from radgen.models.connectors import Connector, ConnectorWidths, register_connector

    @register_connector("my_kind")
    def build_my_kind(cfg, widths, sources) -> Connector: ...

`build_connector` / `build_encoder` look the kind up here; an unknown kind is a one-line
ConfigError that lists the kinds registered at that moment (built-in and user-added alike).
Validation happens at build time, not in radgen.config: config is a lower layer than models and
must not import it (tests/test_layers.py), and a kind registered by user code exists only once that
code has run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from radgen.errors import ConfigError

Builder = TypeVar("Builder", bound=Callable)


class KindRegistry(Generic[Builder]):
    """kind name → builder, for one recipe key (e.g. `model.connector.kind`)."""

    def __init__(self, key: str):
        self.key = key
        self._builders: dict[str, Builder] = {}

    def register(self, kind: str) -> Callable[[Builder], Builder]:
        """Decorator: `@registry.register("kind")` on a builder; returns the builder unchanged."""

        def add(builder: Builder) -> Builder:
            existing = self._builders.get(kind)
            # Two builders for one kind would make a recipe's meaning depend on import order.
            if existing is not None and existing is not builder:
                raise ValueError(f"{self.key} '{kind}' is already registered by "
                                 f"{existing.__module__}.{existing.__qualname__}; pick another kind name")
            self._builders[kind] = builder
            return builder

        return add

    def unregister(self, kind: str) -> None:
        """Remove `kind` (for tests and notebooks that register a kind temporarily)."""
        self._builders.pop(kind, None)

    def kinds(self) -> list[str]:
        """The registered kind names, sorted."""
        return sorted(self._builders)

    def __contains__(self, kind: object) -> bool:
        return kind in self._builders

    def get(self, kind: str) -> Builder:
        """The builder of `kind`; an unknown kind is a ConfigError naming the registered ones."""
        builder = self._builders.get(kind)
        if builder is None:
            raise ConfigError(f"{self.key} '{kind}' is unknown; registered kinds: {', '.join(self.kinds())}")
        return builder
