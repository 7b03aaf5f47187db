"""Test helpers shipped with eventfold: scenarios and backend contract suites."""

from eventfold.testing.processes import ProcessOutcome, ProcessScenario
from eventfold.testing.sagas import SagaScenario, SimulatedCrash, StepRecorder
from eventfold.testing.scenarios import (
    AggregateScenario,
    CommandOutcome,
    CommandScenario,
    DeciderScenario,
    ProjectionScenario,
)
from eventfold.testing.storages import fresh_storage

__all__ = [
    "AggregateScenario",
    "CommandOutcome",
    "CommandScenario",
    "DeciderScenario",
    "ProcessOutcome",
    "ProcessScenario",
    "ProjectionScenario",
    "SagaScenario",
    "SimulatedCrash",
    "StepRecorder",
    "fresh_storage",
]
