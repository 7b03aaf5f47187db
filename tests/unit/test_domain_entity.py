"""Entity: identity, equality and the events it records."""

from __future__ import annotations

from dataclasses import dataclass

from eventfold import Entity


@dataclass(frozen=True)
class CustomerRenamed:
    name: str


class Customer(Entity[str]):
    def rename(self, name: str) -> None:
        self.record(CustomerRenamed(name))


class Supplier(Entity[str]):
    pass


def test_two_entities_with_the_same_id_are_equal() -> None:
    assert Customer("c-1") == Customer("c-1")


def test_entities_with_different_ids_are_not_equal() -> None:
    assert Customer("c-1") != Customer("c-2")


def test_entities_of_different_types_with_the_same_id_are_not_equal() -> None:
    assert Customer("x") != Supplier("x")


def test_equal_entities_hash_alike_so_a_set_keeps_one() -> None:
    assert len({Customer("c-1"), Customer("c-1")}) == 1


def test_a_recorded_event_is_pending() -> None:
    customer = Customer("c-1")
    customer.rename("Ada")
    assert customer.pending_events == (CustomerRenamed("Ada"),)


def test_pull_events_hands_over_the_recorded_events_in_order() -> None:
    customer = Customer("c-1")
    customer.rename("Ada")
    customer.rename("Grace")
    assert customer.pull_events() == [CustomerRenamed("Ada"), CustomerRenamed("Grace")]


def test_pull_events_leaves_nothing_pending() -> None:
    customer = Customer("c-1")
    customer.rename("Ada")
    customer.pull_events()
    assert customer.pending_events == ()


def test_a_new_entity_is_at_version_zero() -> None:
    assert Customer("c-1").version == 0
