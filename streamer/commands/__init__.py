"""Implementations of the ``streamer`` console verbs, one module per verb."""
