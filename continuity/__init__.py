"""continuity: keep priority communications up when unrest, riots or sabotage strike."""

__version__ = "0.1.0"
