"""Where tests find data: the real shared datasets live beside the repository."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
MIKO_RELEASE = SHARED_DATA / "miko_release" / "train.json"
