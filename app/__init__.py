"""Entry points that wire every layer together: the CLI, the embedded stack, the demo, audit."""
