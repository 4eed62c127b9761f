"""The whole paper-task path offline: `biogpt train prompt` fine-tunes the bundled LM in Microsoft's
learned-prompt format on a slice of DDI's train split, and `biogpt evaluate` on the result gives
exactly the test scores its model card and metrics.json report (tiny, so it fits CI's budget)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import biogpt
from biogpt.paper_eval import default_data_dir
from biogpt.paper_tasks import prompt_format_of

REPO = Path(__file__).resolve().parents[2]
DDI = default_data_dir() / "DDI"
pytestmark = pytest.mark.skipif(not DDI.is_dir(), reason="../shared/data is not here")


def cli(*args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "biogpt.cli", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def test_train_prompt_then_evaluate_matches_the_model_card(tmp_path, bundled_models):
    out = tmp_path / "re-ddi-tiny"
    trained = cli("train", "prompt", "--paper-task", "ddi", "--train", str(DDI / "train.json"),
                  "--valid", str(DDI / "valid.json"), "--test", str(DDI / "test.json"), "--init", "bundled",
                  "--limit-train", "16", "--limit-eval", "3", "--max-source-positions", "48", "--answer-tokens", "24",
                  "--loss-on", "target", "--batch-size", "4", "--max-steps", "4", "--eval-every", "4", "--lr", "1e-3",
                  "--device", "cpu", "--workers", "1", "--progress", "lines", "--out", str(out))
    assert trained.returncode == 0, trained.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    model = biogpt.BioGptForCausalLM.from_pretrained(out)
    prompt = prompt_format_of(model)
    assert prompt.task == "ddi" and len(prompt.learned_tokens) == 9 and prompt.source == "biogpt-studio"
    assert model.config.vocab_size == len(biogpt.BioGptTokenizer.from_pretrained(out)) == 42384 + 9

    predictions = tmp_path / "predictions.jsonl"
    evaluated = cli("evaluate", "ddi", str(out), "--limit", "3", "--max-new-tokens", "24",
                    "--predictions", str(predictions))
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    scores = json.loads(evaluated.stdout)
    for key in ("precision", "recall", "f1", "ontology_f1", "examples", "failed", "malformed_pieces"):
        assert scores[key] == metrics[key], key
    card = (out / "README.md").read_text()
    assert f"ddi f1={scores['f1']:.2f} on 3 test examples" in card and "capped at 24 tokens" in card
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["DDI-DrugBank.d700", "DDI-DrugBank.d726", "DDI-DrugBank.d609"]
    # every example is accounted for: parsed items or malformed pieces, or counted as failed
    assert sum(not line["items"] for line in lines) == scores["failed"]


def test_evaluate_refuses_a_model_without_prompt_record(tmp_path, bundled_models):
    result = cli("evaluate", "ddi", "bundled", "--limit", "1", timeout=120)
    assert result.returncode == 1 and "no prompt record" in result.stderr and "Traceback" not in result.stderr
