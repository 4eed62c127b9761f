"""Support code shared by the tests (tests/) and the benchmarks (bench/): where the project's
files are, perturbed random checkpoints, the quality set, a process's memory and the real app
started in-process. Not part of the library: biogpt/ never imports it (the app launcher pulls in
gradio), and tests/ and bench/ import it from the repository root (pytest.ini's `pythonpath`,
bench/common.py).
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
BUNDLED_LM = REPO / "assets" / "models" / "biogpt-pubmed-small"
