"""Activities: every side effect, one module per external system."""
