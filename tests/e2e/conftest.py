"""End-to-end tests: the real Label Studio server (one per test session) and `pslg serve` processes."""

from tests.labelstudio_server import labelstudio_server  # noqa: F401  (the shared session fixture)
