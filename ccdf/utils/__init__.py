"""Small utilities: random generators, atomic file IO, broadcasting."""
