"""BioGPT on plain PyTorch: tokenizer, model, generation and the cached engine behind BioGPT Studio.

Nothing here imports gradio or plotly; `import biogpt` is cheap and works without them.
"""

from .config import BioGptConfig
from .model import (
    BioGptForCausalLM,
    BioGptForSequenceClassification,
    BioGptForTokenClassification,
    BioGptModel,
    KVCache,
    ModelOutput,
)


def __getattr__(name: str):
    # The tokenizer pulls in sacremoses; load it only when asked for.
    if name == "BioGptTokenizer":
        from .tokenizer import BioGptTokenizer

        return BioGptTokenizer
    raise AttributeError(f"module 'biogpt' has no attribute {name!r}")


__all__ = [
    "BioGptConfig",
    "BioGptForCausalLM",
    "BioGptForSequenceClassification",
    "BioGptForTokenClassification",
    "BioGptModel",
    "BioGptTokenizer",
    "KVCache",
    "ModelOutput",
]
