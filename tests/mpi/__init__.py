"""MPI tests (a package, so their module names differ from the serial tests in tests/unit)."""
