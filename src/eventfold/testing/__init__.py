"""Test helpers shipped with eventfold: scenarios and backend contract suites."""

from eventfold.testing.sagas import SagaScenario, SimulatedCrash, StepRecorder
from eventfold.testing.scenarios import AggregateScenario, DeciderScenario
from eventfold.testing.storages import fresh_storage

__all__ = [
    "AggregateScenario",
    "DeciderScenario",
    "SagaScenario",
    "SimulatedCrash",
    "StepRecorder",
    "fresh_storage",
]
