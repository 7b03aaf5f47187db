"""The persistence model and snapshot policy: pure registration rules, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from eventfold import (
    AggregateRoot,
    ConfigurationError,
    Entity,
    PersistenceModel,
    SnapshotPolicy,
    non_event_sourced,
)
from eventfold.application.persistence.model import EventSourcedModel, StateStoredModel


@dataclass
class CartState:
    items: int = 0


class Cart(AggregateRoot[CartState, str]):
    pass


@non_event_sourced
class Wishlist(AggregateRoot[CartState, str]):
    pass


class Note(Entity[str]):
    text: str
    stars: int

    def __init__(self, note_id: str, text: str, stars: int = 0) -> None:
        super().__init__(note_id)
        self.text = text
        self.stars = stars


class Bare(Entity[str]):
    pass


def test_a_snapshot_is_due_when_the_version_reaches_a_multiple() -> None:
    assert SnapshotPolicy(3).is_due(2, 3)


def test_a_snapshot_is_due_when_a_batch_jumps_over_a_multiple() -> None:
    assert SnapshotPolicy(3).is_due(2, 5)


def test_a_snapshot_is_not_due_between_multiples() -> None:
    assert not SnapshotPolicy(3).is_due(3, 5)


def test_a_snapshot_policy_needs_at_least_one_event() -> None:
    with pytest.raises(ConfigurationError):
        SnapshotPolicy(0)


def test_an_event_sourced_type_streams_under_its_name() -> None:
    model = PersistenceModel().event_sourced(Cart, name="carts")
    assert model.stream_id("c-1") == "carts-c-1"


def test_register_picks_event_sourcing_for_an_unmarked_aggregate() -> None:
    assert isinstance(PersistenceModel().register(Cart), EventSourcedModel)


def test_register_picks_state_storage_for_a_marked_aggregate() -> None:
    assert isinstance(PersistenceModel().register(Wishlist), StateStoredModel)


def test_a_marked_type_cannot_be_event_sourced() -> None:
    with pytest.raises(ConfigurationError, match="non_event_sourced"):
        PersistenceModel().event_sourced(Wishlist)


def test_a_plain_entity_cannot_be_event_sourced() -> None:
    with pytest.raises(ConfigurationError, match="not an AggregateRoot"):
        PersistenceModel().event_sourced(Note)  # type: ignore[arg-type]


def test_a_type_is_registered_once() -> None:
    model = PersistenceModel()
    model.event_sourced(Cart)
    with pytest.raises(ConfigurationError, match="already registered"):
        model.event_sourced(Cart)


def test_two_types_cannot_share_a_name() -> None:
    model = PersistenceModel()
    model.event_sourced(Cart, name="baskets")
    with pytest.raises(ConfigurationError, match="baskets"):
        model.state_stored(Note, name="baskets")


def test_a_state_schema_version_below_one_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        PersistenceModel().event_sourced(Cart, state_version=0)


def test_an_unregistered_type_has_no_model() -> None:
    with pytest.raises(ConfigurationError, match="no persistence model"):
        PersistenceModel().model_for(Cart)


def test_a_plain_entity_round_trips_through_its_annotated_fields() -> None:
    model = PersistenceModel().state_stored(Note)
    loaded = model.load("n-1", model.dump(Note("n-1", "hello", 4)))
    assert (loaded.id, loaded.text, loaded.stars, loaded.pending_events) == ("n-1", "hello", 4, ())


def test_a_state_stored_aggregate_round_trips_through_its_state() -> None:
    model = PersistenceModel().state_stored(Wishlist)
    wishlist = Wishlist("w-1", CartState(items=2))
    assert model.load("w-1", model.dump(wishlist)).state == CartState(items=2)


def test_an_entity_without_annotated_fields_needs_dump_and_load() -> None:
    with pytest.raises(ConfigurationError, match="dump= and load="):
        PersistenceModel().state_stored(Bare)


def test_dump_without_load_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="both dump and load"):
        PersistenceModel().state_stored(Bare, dump=lambda _: "{}")
