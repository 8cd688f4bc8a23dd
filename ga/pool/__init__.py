"""A pool of isolated sub-interpreters (own GIL each) that runs training tasks."""
