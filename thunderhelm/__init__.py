"""thunderhelm: durable, observable neural-architecture-search runs on Kafka.

The distribution installs one top-level package, ``thunderhelm``; its layers
live in the repository's top-level folders and are installed under it:

* ``thunderhelm.streams`` (``streams/``): the run saga and everything around
  it: the pure domain, the Faust worker, the run executor, observability, the
  CLI and the local development services;
* ``thunderhelm.ga`` (``ga/``): the genetic algorithm (stdlib only), candidate
  training (the compiled kernel) and the sub-interpreter pool;
* ``thunderhelm.schemas`` (``schemas/``): the public contract: envelope,
  requests, events, results, limits.

Importing this package imports nothing else: the supervisor and the CLI stay
small processes.
"""

__version__ = "0.1.0"


def load_model(path: "str | PathLike[str]") -> "Predictor":
    """Load a run's model artifact (its folder, model.json or model.npz).

    The returned model (one network, or an ensemble of several whose
    probabilities are averaged) has `predict`/`predict_proba` on raw numpy inputs;
    see docs/artifact.md. numpy is imported here, not with the package.
    """
    from pathlib import Path

    from thunderhelm.ga.training.artifact import load_model as _load

    return _load(Path(path))


TYPE_CHECKING = False  # typing's own flag without importing typing
if TYPE_CHECKING:
    from os import PathLike

    from thunderhelm.ga.training.artifact import Predictor
