"""Fault-injection tests: real gearmand, real pools, jobs recorded in PostgreSQL."""
