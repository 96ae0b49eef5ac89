"""The simulated world for the demo, tests and benchmarks; never imported by production code."""
