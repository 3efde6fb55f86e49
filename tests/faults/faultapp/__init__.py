"""Django app of the fault-injection tests; installed only by tests.faults.settings."""
