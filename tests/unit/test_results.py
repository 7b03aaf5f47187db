"""OperationResult: statuses, RFC 9457 problem details and unwrap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from eventfold import FieldError, OperationResult
from eventfold.application.cqrs.results import ResultFactory

CONSTRUCTORS: list[tuple[Callable[[], OperationResult[Any]], int]] = [
    (lambda: OperationResult.ok("x"), 200),
    (lambda: OperationResult.created("x"), 201),
    (lambda: OperationResult.accepted("x"), 202),
    (OperationResult.no_content, 204),
    (OperationResult.bad_request, 400),
    (OperationResult.unauthorized, 401),
    (OperationResult.forbidden, 403),
    (OperationResult.not_found, 404),
    (OperationResult.conflict, 409),
    (OperationResult.internal_error, 500),
]


@pytest.mark.parametrize(("make", "status"), CONSTRUCTORS)
def test_each_constructor_gives_its_status(
    make: Callable[[], OperationResult[Any]], status: int
) -> None:
    assert make().status == status


@pytest.mark.parametrize(("make", "status"), CONSTRUCTORS)
def test_only_2xx_results_are_successes(
    make: Callable[[], OperationResult[Any]], status: int
) -> None:
    assert make().is_success is (status < 300)


def test_a_success_carries_its_data() -> None:
    assert OperationResult.created({"id": 7}).data == {"id": 7}


def test_a_problem_dict_has_the_rfc_9457_members() -> None:
    problem = OperationResult.not_found("order o-1 was not found").problem
    assert problem is not None
    assert problem.to_dict() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "order o-1 was not found",
    }


def test_field_errors_appear_as_an_errors_extension() -> None:
    result = OperationResult.bad_request("invalid", errors=[FieldError("qty", "must be > 0")])
    assert result.problem is not None
    assert result.problem.to_dict()["errors"] == [{"field": "qty", "message": "must be > 0"}]


def test_a_problem_without_detail_omits_the_member() -> None:
    problem = OperationResult.conflict().problem
    assert problem is not None
    assert "detail" not in problem.to_dict()


def test_a_custom_failure_keeps_its_type_uri_and_reason_phrase() -> None:
    result = OperationResult.failure(422, "no", type="https://example.com/probs/stock")
    assert result.problem is not None
    assert result.problem.to_dict()["type"] == "https://example.com/probs/stock"
    assert result.problem.title == "Unprocessable Entity"


def test_a_failure_with_a_success_status_is_refused() -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        OperationResult.failure(200)


def test_an_internal_error_has_a_generic_detail() -> None:
    assert OperationResult.internal_error().detail == "An unexpected error occurred."


def test_unwrap_returns_the_data_of_a_success() -> None:
    assert OperationResult.ok(42).unwrap() == 42


def test_unwrap_raises_with_the_status_and_detail_of_a_failure() -> None:
    with pytest.raises(ValueError, match="404: order o-1 was not found"):
        OperationResult.not_found("order o-1 was not found").unwrap()


def test_a_handler_mixin_builds_the_same_results() -> None:
    factory: ResultFactory[int] = ResultFactory()
    assert factory.not_found("gone") == OperationResult.not_found("gone")


def test_the_mixins_internal_error_matches_the_static_one() -> None:
    assert ResultFactory[int]().internal_error() == OperationResult.internal_error()
