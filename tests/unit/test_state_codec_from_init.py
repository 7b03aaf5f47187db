"""A plain entity without class annotations is stored as its typed __init__ parameters."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from eventfold import ConfigurationError, Entity, PersistenceModel


class Product(Entity[str]):
    def __init__(self, product_id: str, name: str, price: Decimal, *, active: bool = True) -> None:
        super().__init__(product_id)
        self.name = name
        self.price = price
        self.active = active


class Tagged(Entity[str]):
    def __init__(self, tag_id: str, name: str) -> None:
        super().__init__(tag_id)
        self.name = name
        self.colour = "red"  # stored state no parameter describes


class Untyped(Entity[str]):
    def __init__(self, item_id: str, name) -> None:  # type: ignore[no-untyped-def]
        super().__init__(item_id)
        self.name = name


def test_an_entity_is_stored_as_its_init_parameters_and_loaded_back() -> None:
    model = PersistenceModel().state_stored(Product)
    data = model.dump(Product("tea", "Sencha", Decimal("4.50"), active=False))

    loaded = model.load("tea", data)

    assert json.loads(data) == {"name": "Sencha", "price": "4.50", "active": False}
    assert (loaded.id, loaded.name, loaded.price, loaded.active) == (
        "tea",
        "Sencha",
        Decimal("4.50"),
        False,
    )


def test_an_attribute_no_parameter_describes_is_refused_with_what_to_add() -> None:
    model = PersistenceModel().state_stored(Tagged)
    with pytest.raises(ConfigurationError, match=r"not parameters: \['colour'\].*`colour: \.\.\.`"):
        model.dump(Tagged("t-1", "sale"))


def test_an_untyped_init_parameter_is_refused_at_registration() -> None:
    with pytest.raises(ConfigurationError, match=r"untyped: \['name'\].*dump= and load="):
        PersistenceModel().state_stored(Untyped)
