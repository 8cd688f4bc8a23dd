"""Training a candidate: the compiled kernel, its numpy twin, datasets and evaluators."""
