"""Where browser tests save their screenshots.

The README shows screenshots from ``docs/screenshots/``; tests write there only when asked
(``WFA_UPDATE_SCREENSHOTS=1``), so an ordinary test run leaves the checkout as it was. Otherwise
they go to a temporary directory of this test session.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

UPDATE_ENV = "WFA_UPDATE_SCREENSHOTS"
REPO_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def screenshot_dir() -> Path:
    """``docs/screenshots`` when ``WFA_UPDATE_SCREENSHOTS=1``, else a temporary directory."""
    if os.environ.get(UPDATE_ENV) == "1":
        REPO_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return REPO_SCREENSHOTS
    return Path(tempfile.mkdtemp(prefix="wfa-screenshots-"))
