"""HTTP routes; thin: they start, signal, query and update workflows and read the store."""
