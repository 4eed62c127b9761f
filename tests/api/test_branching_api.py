"""Issue 17 over the API (gradio_client): /generate with a forced prefix (a branch) and /attribute.
The text comes first and every other parameter is defaulted; one app server for the module."""

from __future__ import annotations

import pytest
from gradio_client.exceptions import AppError

from biogpt.generation import SAMPLER_RULE

PROMPT = "Aspirin is used to"


@pytest.fixture(scope="module")
def server(attention_server):
    return attention_server


def _run(client, **kwargs):
    text, page, info, table, result = client.predict(PROMPT, api_name="/generate", **kwargs)
    return result


def test_new_parameters_are_defaulted_and_text_comes_first(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for name in ("/generate", "/attribute"):
        parameters = endpoints[name]["parameters"]
        assert parameters[0]["parameter_name"] in ("prompt", "text")
        assert all(p["parameter_has_default"] for p in parameters[1:]), name
    names = [p["parameter_name"] for p in endpoints["/generate"]["parameters"]]
    assert names[-2:] == ["forced_token_ids", "forced_text"]


def test_forcing_a_runs_own_tokens_reproduces_it_and_a_branch_reproduces_itself(client):
    original = _run(client, mode="sampling", seed=11, max_new_tokens=12)
    ids = [t["id"] for t in original["samples"][0]["tokens"]]
    assert "forced_token_ids" not in original["settings"]
    for forced in (ids, ", ".join(map(str, ids[:4]))):  # all of them, or a prefix as text
        replay = _run(client, mode="sampling", seed=11, max_new_tokens=12, forced_token_ids=str(forced))
        assert replay["samples"] == original["samples"]
        assert replay["settings"]["sampler_rule"] == SAMPLER_RULE
    branch = _run(client, mode="sampling", seed=11, max_new_tokens=12, forced_token_ids=str(ids[:2]),
                  forced_text=" kidney")
    tokens = [t["id"] for t in branch["samples"][0]["tokens"]]
    assert tokens[:2] == ids[:2] and tokens != ids and branch["settings"]["forced_token_ids"] == tokens[:len(
        branch["settings"]["forced_token_ids"])]
    again = _run(client, mode="sampling", seed=11, max_new_tokens=12, forced_token_ids=str(ids[:2]),
                 forced_text=" kidney")
    assert again["samples"] == branch["samples"]
    greedy = _run(client, mode="greedy", max_new_tokens=8)
    greedy_ids = [t["id"] for t in greedy["samples"][0]["tokens"]]
    assert _run(client, mode="greedy", max_new_tokens=8, forced_token_ids=str(greedy_ids[:3]))["samples"] == \
        greedy["samples"]


def test_bad_forced_prefixes_are_one_sentence(client):
    for kwargs, words in [(dict(forced_token_ids="5, x"), "whole numbers"),
                          (dict(forced_token_ids="[99999999]"), "vocabulary"),
                          (dict(mode="beam search", forced_token_ids="[5]"), "Beam search cannot continue")]:
        with pytest.raises(AppError, match=words):
            _run(client, **kwargs)


def test_attribute_with_the_text_alone_explains_its_last_token(client):
    text = "Naloxone reverses the antihypertensive effect of clonidine"
    page, plot, summary = client.predict(text, api_name="/attribute")
    assert 'class="attr-piece"' in page and "Naloxone" in page
    assert "integrated gradients" in summary and "within the tolerance" in summary and "steps" in summary
    page, plot, summary = client.predict(text, position=3, method="occlusion", contrast="heart", level="token",
                                         api_name="/attribute")
    assert "rather than “heart”" in page and "occlusion" in summary
    with pytest.raises(AppError, match="tokens and the text"):
        client.predict(text, baseline_text="Heparin", api_name="/attribute")
