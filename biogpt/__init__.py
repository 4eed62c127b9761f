"""BioGPT on plain PyTorch: tokenizer, model, generation and the cached engine behind BioGPT Studio.

Nothing here imports gradio or plotly, and `import biogpt` itself imports nothing heavy: the
names below load their module (and torch, or sacremoses) on first use, so the app can start
its web server while torch is still being imported.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "BioGptConfig": ".config",
    "BioGptModel": ".model",
    "BioGptForCausalLM": ".model",
    "BioGptForTokenClassification": ".model",
    "BioGptForSequenceClassification": ".model",
    "KVCache": ".kv_cache",
    "ModelOutput": ".model",
    "BioGptTokenizer": ".tokenizer",
}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'biogpt' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name], __name__), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_HOMES))


__all__ = list(_HOMES)
