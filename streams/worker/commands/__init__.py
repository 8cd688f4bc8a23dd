"""Commands on run-commands: read on the run's owner, handled per run in lanes, decided."""
