"""The genetic algorithm: genome, operators, the engine and a search loop (stdlib only)."""
