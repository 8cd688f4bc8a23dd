"""The pure run saga: decide, evolve and react, the retry policy and invariants.

No Kafka, Faust, OpenTelemetry, numpy, pydantic or clock: everything here is a
function of its arguments, tested without a broker.
"""
