"""Benchmarks of the pool against bare worker loops and separate processes; see run.py."""
