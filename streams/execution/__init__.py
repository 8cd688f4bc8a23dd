"""The run executor: a run's steps on the interpreter pool, its artifact and result."""
