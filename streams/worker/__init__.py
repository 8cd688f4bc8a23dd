"""The Faust worker: the Kafka edge of the saga.

Intake and admission of run requests, the run-commands and run-events
handlers, dead letters, topic definitions, settings, and the supervisor that
restarts the worker process.
"""
