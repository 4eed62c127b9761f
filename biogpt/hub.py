"""Where a model's files are: a local folder, a bundled name, or a Hugging Face hub snapshot.

Kept apart from loading.py so that the tokenizer can resolve names without importing torch.
"""

from __future__ import annotations

from pathlib import Path

def _assets_dir() -> Path:
    """assets/ at the top of a checkout, or biogpt/assets in an installed copy (pyproject.toml maps
    the one to the other), so the bundled models load offline from any directory."""
    package = Path(__file__).resolve().parent
    installed = package / "assets"
    return installed if installed.is_dir() else package.parent / "assets"


ASSETS_DIR = _assets_dir()
# Short names for what ships inside the project, usable wherever a hub id is.
BUNDLED_NAMES = {
    "bundled": ASSETS_DIR / "models" / "biogpt-pubmed-small",
    "bundled-ner": ASSETS_DIR / "models" / "biogpt-pubmed-small-ner",
    "bundled-hoc": ASSETS_DIR / "models" / "biogpt-pubmed-small-hoc",
    "bundled-tokenizer": ASSETS_DIR / "tokenizers" / "biogpt",
    "bundled-tokenizer-large": ASSETS_DIR / "tokenizers" / "biogpt-large",
}


class ModelNotAvailableError(OSError):
    """A model could not be found locally nor downloaded; the message says what to do."""


def resolve_model_dir(name_or_path: str | Path, allow_patterns: list[str]) -> Path:
    """A local folder holding the files: the folder itself, a bundled model, or a hub snapshot.

    Hub ids go through huggingface_hub, which honours HF_HUB_CACHE and HF_HUB_OFFLINE; only files
    matching `allow_patterns` are downloaded.
    """
    name = str(name_or_path)
    if name in BUNDLED_NAMES:
        path = BUNDLED_NAMES[name]
        if not path.is_dir():
            raise ModelNotAvailableError(f"The bundled model {name!r} is missing "
                                         f"({path.relative_to(ASSETS_DIR.parent).as_posix()}); reinstall the project.")
        return path
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") != 1:
        raise ModelNotAvailableError(
            f"{name!r} is neither a folder nor a Hugging Face model id like 'microsoft/biogpt'."
        )
    return _snapshot(name, allow_patterns)


def _snapshot(repo_id: str, allow_patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, allow_patterns=allow_patterns))
    except RepositoryNotFoundError:
        raise ModelNotAvailableError(
            f"The Hugging Face hub has no model {repo_id!r}; check the spelling."
        ) from None
    except GatedRepoError:
        raise ModelNotAvailableError(
            f"The model {repo_id!r} is gated; log in with `hf auth login` after accepting its terms."
        ) from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise ModelNotAvailableError(
            f"The model {repo_id!r} is not in the local Hugging Face cache and the hub cannot be reached "
            f"({type(error).__name__}); connect to the internet once to download it, or pass a local folder."
        ) from None
