"""The run saga and everything around it, one folder per layer.

* ``domain``: the pure saga (decide/evolve/react), retry policy, invariants;
* ``worker``: the Faust worker: intake, handlers, dead letters, topics, settings, supervisor;
* ``execution``: the run executor: generation steps on the pool, artifacts, results;
* ``observability``: tracing, metrics, log correlation;
* ``cli``: the ``thunderhelm`` command, its Kafka client and rendering;
* ``devservices``: local Kafka and Jaeger for development and tests.
"""
