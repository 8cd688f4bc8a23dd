"""Configuration: the worker's and the tools' settings from the environment, below every layer."""
