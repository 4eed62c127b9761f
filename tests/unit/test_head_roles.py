"""Head roles (biogpt.interpret.roles): exact scores on hand-written attention, and a tiny model whose
weights are set by hand so that one head copies the previous token and another is an induction head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biogpt import BioGptConfig, BioGptForCausalLM, interpret
from biogpt.interpret.roles import ROLES, head_roles, probe_ids, role_scores

VOCAB, POSITIONS, HEADS, HEAD_DIM = 48, 64, 4, 64
TOKEN, POSITION, PREVIOUS = 0, VOCAB, VOCAB + POSITIONS  # where each feature lives in the residual stream
PREVIOUS_HEAD, INDUCTION_HEAD = (0, 0), (1, 1)


def hand_built_model() -> BioGptForCausalLM:
    """Two layers of four heads on one-hot features, everything else zero (MLPs add nothing):

    residual [0, 48) the token, [48, 112) the position, [112, 160) the previous token.
    Layer 0 head 0 (previous-token head): its query at position t is the position t-1, its key at s
    is the position s, so it attends to t-1; its value is the token, written into the
    previous-token block. Layer 1 head 1 (induction head): its query is the current token, its key
    the previous token of each position, so it attends to the position right after an earlier
    occurrence of the current token. Every other head has zero weights and attends uniformly.
    """
    config = BioGptConfig(vocab_size=VOCAB, hidden_size=HEADS * HEAD_DIM, num_hidden_layers=2, num_attention_heads=HEADS,
                          intermediate_size=16, max_position_embeddings=POSITIONS, scale_embedding=False,
                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BioGptForCausalLM(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
        core = model.biogpt
        core.embed_tokens.weight[:, TOKEN:TOKEN + VOCAB] = torch.eye(VOCAB)
        # Position p reads row p + 2 (fairseq's offset).
        core.embed_positions.weight[2:, POSITION:POSITION + POSITIONS] = torch.eye(POSITIONS)
        first = core.layers[0].self_attn
        for t in range(1, POSITIONS):  # query dim t-1 <- position t; key dim s <- position s
            first.q_proj.weight[t - 1, POSITION + t] = 1.5
        for s in range(POSITIONS):
            first.k_proj.weight[s, POSITION + s] = 1.5
        for v in range(VOCAB):
            first.v_proj.weight[v, TOKEN + v] = 1.0
            first.out_proj.weight[PREVIOUS + v, v] = 0.1
        second = model.biogpt.layers[1].self_attn
        offset = INDUCTION_HEAD[1] * HEAD_DIM
        for v in range(VOCAB):
            second.q_proj.weight[offset + v, TOKEN + v] = 1.8
            second.k_proj.weight[offset + v, PREVIOUS + v] = 1.8
    return model.eval()


def test_previous_token_and_induction_heads_rank_first_by_twice_the_next_head():
    model = hand_built_model()
    calls = []
    original = model.forward
    model.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    roles = head_roles(model, "hand-built")
    del model.forward
    assert len(calls) == roles.forwards == 1  # the issue allows 3 forwards of the probe; one batched suffices
    assert roles.period == (POSITIONS - 1) // 2  # shrunk to fit the model's 64 positions
    for role, head in (("previous", PREVIOUS_HEAD), ("induction", INDUCTION_HEAD)):
        ranked = roles.ranking(role)
        assert ranked[0][:2] == head, (role, ranked[:3])
        assert ranked[0][2] >= 2 * ranked[1][2], (role, ranked[:3])
        assert roles.clear_example(role) == head
    assert roles.scores["previous"][PREVIOUS_HEAD] > 0.95 and roles.scores["induction"][INDUCTION_HEAD] > 0.95
    # The previous-token head looks 1 token back: the most local head.
    assert roles.ranking("locality")[0][:2] == PREVIOUS_HEAD
    assert roles.ranking("locality")[0][2] == pytest.approx(1.0, abs=0.05)
    assert roles.clear_example("duplicate") is None  # no head here attends to the earlier same token


def test_role_scores_on_a_hand_written_probe_are_exact():
    # Period 2: </s> a b a b. Head 0 attends to the previous token; head 1 does induction (query at
    # position 3 = "a" -> position 2, the "b" after the first "a"; position 4 = "b" -> 3); head 2
    # attends to the duplicate (3 -> 1, 4 -> 2); head 3 splits its weight by hand.
    eye = np.eye(5)
    previous = np.stack([eye[0], eye[0], eye[1], eye[2], eye[3]])
    induction = np.stack([eye[0], eye[0], 0.5 * eye[0] + 0.5 * eye[1], eye[2], eye[3]])
    duplicate = np.stack([eye[0], eye[0], 0.5 * (eye[0] + eye[1]), eye[1], eye[2]])
    mixed = np.array([[1, 0, 0, 0, 0], [0.5, 0.5, 0, 0, 0], [0.2, 0.3, 0.5, 0, 0],
                      [0.1, 0.2, 0.3, 0.4, 0], [0.4, 0.1, 0.1, 0.2, 0.2]])
    attentions = np.stack([previous, induction, duplicate, mixed])[None].astype(np.float32)
    scores = role_scores(attentions, period=2)
    # previous: mean of a[i, i-1] over i = 1..4; induction: a[3, 2], a[4, 3]; duplicate: a[3, 1], a[4, 2].
    np.testing.assert_allclose(scores["previous"][0], [1.0, (1 + 0.5 + 1 + 1) / 4, (1 + 0.5 + 0 + 0) / 4,
                                                       (0.5 + 0.3 + 0.3 + 0.2) / 4])
    np.testing.assert_allclose(scores["induction"][0], [(1 + 1) / 2, 1.0, 0.0, (0.3 + 0.2) / 2])
    np.testing.assert_allclose(scores["duplicate"][0], [0.0, 0.0, 1.0, (0.2 + 0.1) / 2])
    np.testing.assert_allclose(scores["sink"][0], [(1 + 0 + 0 + 0) / 4, (1 + 0.5 + 0 + 0) / 4, (1 + 0.5) / 4,
                                                   (0.5 + 0.2 + 0.1 + 0.4) / 4])
    # locality: sum_j a[i, j] (i - j), averaged over rows 1..4.
    mixed_distance = (0.5 * 1 + (0.2 * 2 + 0.3 * 1) + (0.1 * 3 + 0.2 * 2 + 0.3 * 1) + (0.4 * 4 + 0.1 * 3 + 0.1 * 2 + 0.2))
    np.testing.assert_allclose(scores["locality"][0], [1.0, (1 + 1.5 + 1 + 1) / 4, (1 + 1.5 + 2 + 2) / 4,
                                                       mixed_distance / 4], rtol=1e-6)
    with pytest.raises(ValueError, match="period 3"):
        role_scores(attentions, period=3)


def test_the_probe_repeats_distinct_random_tokens_and_never_uses_special_ones():
    ids = probe_ids(vocab_size=60, first_id=2, period=20, rows=3, seed=7, skip=(0, 1, 3))
    assert ids.shape == (3, 41) and (ids[:, 0] == 2).all()
    np.testing.assert_array_equal(ids[:, 1:21], ids[:, 21:])
    for row in ids:
        assert len(set(row[1:21].tolist())) == 20 and not {0, 1, 2, 3} & set(row[1:].tolist())
    assert not np.array_equal(ids[0], ids[1])  # each row its own random sequence
    np.testing.assert_array_equal(ids, probe_ids(60, 2, 20, 3, 7, (0, 1, 3)))  # seeded: reproducible
    with pytest.raises(ValueError, match="fewer than"):
        probe_ids(vocab_size=10, first_id=2, period=20)


def test_rankings_table_and_clear_examples_read_the_scores():
    scores = {role: np.zeros((2, 2), np.float32) for role in ROLES}
    scores["previous"][:] = [[0.1, 0.8], [0.5, 0.2]]
    scores["locality"][:] = [[3.0, 1.0], [2.0, 4.0]]
    roles = interpret.HeadRoles("m", scores, np.zeros((1, 5), np.int64), period=2, forwards=1)
    assert [r[:2] for r in roles.ranking("previous")] == [(0, 1), (1, 0), (1, 1), (0, 0)]
    assert [r[:2] for r in roles.ranking("locality")] == [(0, 1), (1, 0), (0, 0), (1, 1)]  # nearest first
    assert roles.clear_example("previous") is None  # 0.8 is not twice 0.5
    scores["previous"][1, 0] = 0.4
    assert roles.clear_example("previous") == (0, 1)
    assert len(roles.table()) == 4 and roles.table()[1] == {"layer": 0, "head": 1, **{r: float(scores[r][0, 1]) for r in ROLES}}
    with pytest.raises(ValueError, match="head role is one of"):
        roles.ranking("copying")
