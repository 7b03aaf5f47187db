"""Specifications: operators, composition, nested fields, and the errors of a bad query."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from eventfold import (
    InvalidValueError,
    Specification,
    SpecificationBuilder,
    UnknownFieldError,
    UnknownOperatorError,
)
from eventfold.domain.specification import AllOf, AnyOf, Condition, FieldSet, Not, Operator


def spec(field: str, operator: str, value: object = True) -> Specification:
    return SpecificationBuilder().where(field, operator, value).build()


@pytest.mark.parametrize(
    ("operator", "value", "matching", "failing"),
    [
        ("=", 5, 5, 6),
        ("!=", 5, 6, 5),
        ("<", 5, 4, 5),
        ("<=", 5, 5, 6),
        (">", 5, 6, 5),
        (">=", 5, 5, 4),
        ("in", [1, 5], 5, 2),
        ("not in", [1, 5], 2, 5),
        ("between", (1, 5), 5, 6),
        ("like", "a_c%", "abcd", "ABcd"),
        ("contains", "bc", "abcd", "acbd"),
        ("startswith", "ab", "abc", "cab"),
        ("is null", True, None, 1),
        ("is null", False, 1, None),
    ],
)
def test_each_operator_accepts_a_matching_value_and_refuses_another(
    operator: str, value: object, matching: object, failing: object
) -> None:
    condition = spec("v", operator, value)
    assert condition.is_satisfied_by({"v": matching})
    assert not condition.is_satisfied_by({"v": failing})


def test_like_is_case_sensitive() -> None:
    assert not spec("name", "like", "abc").is_satisfied_by({"name": "ABC"})


def test_like_percent_and_underscore_match_literally_when_escaped() -> None:
    pattern = spec("code", "like", "10\\%\\_x")
    assert pattern.is_satisfied_by({"code": "10%_x"})
    assert not pattern.is_satisfied_by({"code": "10abx"})


def test_like_percent_matches_across_newlines() -> None:
    assert spec("text", "like", "a%b").is_satisfied_by({"text": "a\nb"})


def test_contains_finds_a_member_of_a_list_field() -> None:
    assert spec("tags", "contains", "red").is_satisfied_by({"tags": ["blue", "red"]})


def test_contains_does_not_take_true_for_one_in_a_list() -> None:
    assert not spec("flags", "contains", 1).is_satisfied_by({"flags": [True]})


def test_equality_does_not_take_true_for_one() -> None:
    assert not spec("count", "=", 1).is_satisfied_by({"count": True})


def test_a_null_field_satisfies_no_positive_condition() -> None:
    for operator, value in [("=", 1), ("<", 1), (">=", 1), ("in", [1]), ("like", "%")]:
        assert not spec("v", operator, value).is_satisfied_by({"v": None})


def test_not_equal_and_not_in_are_satisfied_by_a_null_field() -> None:
    assert spec("v", "!=", 1).is_satisfied_by({})
    assert spec("v", "not in", [1]).is_satisfied_by({})


def test_a_missing_field_reads_as_null() -> None:
    assert spec("absent", "is null", True).is_satisfied_by({"present": 1})


def test_values_of_incomparable_types_do_not_match() -> None:
    assert not spec("v", "<", 5).is_satisfied_by({"v": "text"})


def test_and_needs_both_sides() -> None:
    both = spec("a", "=", 1) & spec("b", "=", 2)
    assert both.is_satisfied_by({"a": 1, "b": 2})
    assert not both.is_satisfied_by({"a": 1, "b": 3})


def test_or_needs_either_side() -> None:
    either = spec("a", "=", 1) | spec("b", "=", 2)
    assert either.is_satisfied_by({"a": 0, "b": 2})
    assert not either.is_satisfied_by({"a": 0, "b": 0})


def test_invert_negates_exactly_even_for_null_fields() -> None:
    negated = ~spec("a", ">", 1)
    assert negated.is_satisfied_by({"a": None})
    assert not negated.is_satisfied_by({"a": 2})


def test_method_composition_builds_the_same_tree_as_operators() -> None:
    a, b = spec("a", "=", 1), spec("b", "=", 2)
    assert a.and_(b) == a & b
    assert a.or_(b).not_() == ~(a | b)


def test_chained_where_means_and() -> None:
    built = SpecificationBuilder().where("a", "=", 1).where("b", "=", 2).build()
    assert built == AllOf((Condition("a", Operator.EQ, 1), Condition("b", Operator.EQ, 2)))


def test_or_where_starts_a_group_or_ed_with_the_previous() -> None:
    built = SpecificationBuilder().where("a", "=", 1).where("b", "=", 2).or_where("c", "=", 3)
    result = built.build()
    assert result.is_satisfied_by({"c": 3})
    assert result.is_satisfied_by({"a": 1, "b": 2})
    assert not result.is_satisfied_by({"a": 1, "c": 4})
    assert isinstance(result, AnyOf)


def test_an_empty_builder_is_satisfied_by_everything() -> None:
    assert SpecificationBuilder().build().is_satisfied_by(object())


def test_a_specification_lists_its_conditions() -> None:
    tree = ~(spec("a", "=", 1) | spec("b", "=", 2))
    assert isinstance(tree, Not)
    assert [c.field for c in tree.conditions()] == ["a", "b"]


@dataclass
class Address:
    city: str


@dataclass
class Customer:
    address: Address | None


class Order(BaseModel):
    customer: dict[str, Any]


class Plain:
    def __init__(self, customer: object) -> None:
        self.customer = customer


@pytest.mark.parametrize(
    "candidate",
    [
        {"customer": {"address": {"city": "Oslo"}}},
        Plain(Customer(Address("Oslo"))),
        Order(customer={"address": {"city": "Oslo"}}),
    ],
    ids=["dict", "object-with-dataclasses", "pydantic"],
)
def test_a_dotted_field_reads_nested_values(candidate: object) -> None:
    assert spec("customer.address.city", "=", "Oslo").is_satisfied_by(candidate)


def test_a_dotted_field_through_a_null_reads_as_null() -> None:
    candidate = Plain(Customer(None))
    assert spec("customer.address.city", "is null", True).is_satisfied_by(candidate)


def test_an_unknown_operator_is_refused_when_the_condition_is_built() -> None:
    with pytest.raises(UnknownOperatorError):
        SpecificationBuilder().where("a", "=1; DROP TABLE x; --", 1)


def test_operators_ignore_case_and_spacing() -> None:
    assert spec("v", " NOT   IN ", [1]).is_satisfied_by({"v": 2})


@pytest.mark.parametrize(
    ("operator", "value"),
    [
        ("in", 5),
        ("in", "abc"),
        ("between", (1, 2, 3)),
        ("between", 1),
        ("like", 5),
        ("startswith", None),
        ("is null", "yes"),
        ("=", None),
        ("<", [1]),
        ("=", float("nan")),
        ("like", "abc\\"),
    ],
)
def test_a_value_that_cannot_fit_its_operator_is_refused_when_built(
    operator: str, value: object
) -> None:
    with pytest.raises(InvalidValueError):
        SpecificationBuilder().where("v", operator, value)


FIELDS = FieldSet("Order", {"total": Decimal, "count": int, "name": str, "tags": list[str]})


def test_validation_refuses_a_field_the_model_does_not_declare() -> None:
    with pytest.raises(UnknownFieldError) as raised:
        spec("name; DROP TABLE x", "=", 1).validate(FIELDS)
    assert (raised.value.field, raised.value.model) == ("name; DROP TABLE x", "Order")


@pytest.mark.parametrize(
    ("field", "operator", "value"),
    [
        ("count", "=", "5"),
        ("count", "=", True),
        ("count", "=", 1.5),
        ("total", "=", 1.5),
        ("name", "in", ["a", 1]),
        ("count", "like", "1%"),
        ("tags", "=", "red"),
        ("tags", "contains", 1),
    ],
)
def test_validation_refuses_a_value_of_the_wrong_type(
    field: str, operator: str, value: object
) -> None:
    with pytest.raises(InvalidValueError):
        spec(field, operator, value).validate(FIELDS)


def test_validation_accepts_an_int_for_a_decimal_field() -> None:
    spec("total", ">", 10).validate(FIELDS)


def test_validation_accepts_a_plain_mapping_of_field_types() -> None:
    with pytest.raises(UnknownFieldError):
        spec("other", "=", 1).validate({"count": int}, model="Order")


def test_a_field_set_is_read_from_a_model_with_nested_fields() -> None:
    fields = FieldSet.from_model(Customer)
    assert list(fields) == ["address.city"]
    assert fields.type_of("address.city") is str
