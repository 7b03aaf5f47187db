"""Test helpers shipped with eventfold: scenarios and backend contract suites."""

from eventfold.testing.sagas import SagaScenario, SimulatedCrash, StepRecorder
from eventfold.testing.scenarios import AggregateScenario, DeciderScenario

__all__ = [
    "AggregateScenario",
    "DeciderScenario",
    "SagaScenario",
    "SimulatedCrash",
    "StepRecorder",
]
