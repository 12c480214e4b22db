"""The realization engine: registry, matchers, builds and the realize algorithm."""
