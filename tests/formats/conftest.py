"""Fixtures of the format tests: the backend tests' synthetic scene served from a Label Studio local-files root
(the two-routes test sends the same image through an export and through the backend)."""

from tests.backend.conftest import files_root, scene  # noqa: F401  (re-exported fixtures)
