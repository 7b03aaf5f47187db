"""The application layer: mediator, behaviours, results, persistence orchestration."""
