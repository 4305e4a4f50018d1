"""Benchmarks of the Semantic Gap explorer: each module is a script that writes JSON to bench/out/."""
