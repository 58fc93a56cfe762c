"""Where the real data lives for the tests that use it (``$PSLG_SHARED_DATA``, by default a ``shared/data`` folder
beside the repository on project machines; tests reach it through the ``shared_data`` fixture)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("PSLG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
#: A Label Studio JSON export with brush masks of the iSAID instances, and its labeling config (inside SHARED_DATA).
SHARED_EXPORT = "derived/label_studio_brush_export_isaid.json"
SHARED_CONFIG = "derived/label_config.xml"
