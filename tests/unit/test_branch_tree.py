"""The Generate tab's branch tree (ui/branches.py) on the real engine: alternatives carry their
token ids, a branch forces exactly the shown tokens before it plus the chosen one with the first
run's seed, branches of branches, the bound, and an export that reproduces every branch."""

from __future__ import annotations

import json

import pytest

from biogpt.generation import SAMPLER_RULE
from biogpt.serving import Engine, GenerationRequest
from biogpt.serving.requests import ForcedPrefix
from ui import branches


@pytest.fixture(scope="module")
def engine(bundled_models, one_thread):
    return Engine(device="cpu", dtype="float32")


def _last(results):
    return list(results)[-1]


def _branch(engine, tree, position, token_id):
    forced = branches.forced_ids(tree, position, token_id)
    result = _last(engine.generate(branches.branch_request(tree, forced), forced=ForcedPrefix(token_ids=forced)))
    return branches.add_branch(tree, position, forced, result)


def test_alternatives_carry_their_token_ids(engine):
    result = _last(engine.generate(GenerationRequest(prompt="Aspirin is used to", mode="greedy", max_new_tokens=6)))
    sample = result.samples[0]
    loaded = engine.load("bundled", "generate")
    assert len(sample.alternative_ids) == len(sample.alternatives) == 6
    for step, ids in zip(sample.alternatives, sample.alternative_ids):
        assert [surface for surface, _ in step] == [loaded.surface(i) or surface for i, (surface, _) in zip(ids, step)]
    # Greedy: the chosen token is the most likely listed one.
    assert [ids[0] for ids in sample.alternative_ids] == sample.token_ids.tolist()


def test_branch_twice_switch_and_export_reproduce_each_branch(engine):
    request = GenerationRequest(prompt="Aspirin is used to", mode="sampling", seed=-1, max_new_tokens=10)
    first = _last(engine.generate(request))
    tree = branches.tree_for(None, first)
    assert tree.request.seed == first.settings["seed"] != -1
    assert branches.branching_problem(first) == ""

    choices = branches.choices_at(tree, 3)
    assert choices and all(token_id != int(first.samples[0].token_ids[3]) for _, token_id in choices)
    second = _branch(engine, tree, 3, choices[0][1])
    ids = second.sample.token_ids.tolist()
    assert ids[:3] == first.samples[0].token_ids.tolist()[:3] and ids[3] == choices[0][1]
    assert second.result.settings["seed"] == first.settings["seed"]
    assert second.result.settings["sampler_rule"] == SAMPLER_RULE
    assert second.label.startswith("2 · token 4: ") and second.label.endswith("(from 1)")

    third = _branch(engine, tree, 6, branches.choices_at(tree, 6)[-1][1])  # a branch of the branch
    assert third.parent == 2 and third.sample.token_ids.tolist()[:6] == ids[:6]
    assert [number for _, number in branches.branch_labels(tree)] == [1, 2, 3] and tree.current == 3
    tree.current = 1
    assert tree.shown.sample.text == first.samples[0].text
    assert branches.tree_for(tree, first) is tree  # the same first run keeps its tree
    tree.current = 3
    target = branches.explain_target(tree, 6)
    assert target["text"].startswith(request.prompt) and target["text"].endswith(third.sample.text)
    assert target["text"][target["char"]:].startswith(target["token"]) and target["token_number"] == 7

    exported = json.loads(branches.export_json(tree))
    assert [b["forced_token_ids"] for b in exported["branches"]] == [[], second.forced_token_ids, third.forced_token_ids]
    for entry in exported["branches"][1:]:  # each branch alone, from its export, gives the same tokens
        alone = GenerationRequest(**{**exported["request"], "seed": entry["seed"]})
        again = _last(engine.generate(alone, forced=ForcedPrefix(token_ids=entry["forced_token_ids"])))
        assert again.samples[0].token_ids.tolist() == entry["token_ids"]
    # Forcing the first run's own tokens through the same path gives the first run.
    own = first.samples[0].token_ids.tolist()
    assert _last(engine.generate(branches.branch_request(tree, own), forced=ForcedPrefix(own))).samples[0].text == \
        first.samples[0].text


def test_the_tree_is_bounded_and_refusals_are_sentences(engine):
    request = GenerationRequest(prompt="Aspirin is used to", mode="greedy", max_new_tokens=4)
    first = _last(engine.generate(request))
    tree = branches.start_tree(first)
    with pytest.raises(ValueError, match="there is no token 9"):
        branches.choices_at(tree, 8)
    with pytest.raises(ValueError, match="Open a generated token first"):
        branches.forced_ids(tree, None, 5)
    with pytest.raises(ValueError, match="no branch 7"):
        tree.branch(7)
    for _ in range(branches.MAX_BRANCHES - 1):
        branches.add_branch(tree, 0, [int(first.samples[0].token_ids[0])], first)
        tree.current = 1
    with pytest.raises(ValueError, match=f"at most {branches.MAX_BRANCHES} branches"):
        branches.forced_ids(tree, 0, 5)
    beam = _last(engine.generate(GenerationRequest(prompt="Aspirin", mode="beam search", num_beams=2, max_new_tokens=2)))
    with pytest.raises(ValueError, match="Beam search cannot continue"):
        branches.tree_for(tree, beam)
    with pytest.raises(ValueError, match="Generate a text first"):
        branches.tree_for(tree, None)
    assert branches.parse_forced_ids("[5, 17]") == branches.parse_forced_ids("5, 17") == [5, 17]
    assert branches.parse_forced_ids("") == branches.parse_forced_ids(None) == []
    for bad in ("5, x", "[1.5]", [True], "{}"):
        with pytest.raises(ValueError, match="whole numbers"):
            branches.parse_forced_ids(bad)


def test_explain_finds_the_generated_token_in_the_attention_tabs_reading(engine):
    from ui.branch_panel import position_at

    first = _last(engine.generate(GenerationRequest(prompt="Naloxone reverses the", mode="greedy", max_new_tokens=8)))
    tree = branches.start_tree(first)
    for number in range(8):
        target = branches.explain_target(tree, number)
        if not target["token"]:
            continue
        analysis = engine.analyze(target["text"])
        position = position_at(analysis.offsets, target["char"])
        start, end = analysis.offsets[position]
        assert target["text"][start:].startswith(target["token"][:end - start]) and start == target["char"]
    assert position_at([(0, 0), (0, 3), (4, 9)], 4) == 2 and position_at([(0, 0), (0, 3)], 7) == 2
