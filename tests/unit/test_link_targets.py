"""What a link may hold for the tabs that run on a button (issue 16): whole-number settings stay whole numbers
through a slider's 60.0, and a restored link is checked against the controls' own choices before anything runs."""

from __future__ import annotations

import gradio as gr
import pytest

from ui import link_wiring, links


def test_a_slider_float_for_a_whole_number_setting_is_linked_as_a_whole_number():
    defaults = {"max_new_tokens": 64, "temperature": 0.8, "seed": -1}
    query = links.encode_state("generate", "Aspirin", {"max_new_tokens": 12.0, "temperature": 1.0, "seed": 1234.0},
                               defaults)
    assert query == "tab=generate&text=Aspirin&max_new_tokens=12&temperature=1.0&seed=1234"
    state = links.decode_state(query, {"generate": defaults})
    assert state.settings == {"max_new_tokens": 12, "temperature": 1.0, "seed": 1234}
    assert links.encode_state("tasks", "x", {"task": "ddi"}, {"task": "bc5cdr"}) == "tab=tasks&text=x&task=ddi"


@pytest.fixture(scope="module")
def classify_like():
    with gr.Blocks():
        with gr.Tabs() as tabs:
            with gr.Tab("Classify", id="classify"):
                text = gr.Textbox()
                mode = gr.Radio(["supervised", "zero-shot"], value="supervised", visible=False)
                model = gr.Dropdown([("Bundled", "bundled"), ("Large", "large")], value="bundled")
                target = link_wiring.LinkTarget("classify", text, {"mode": mode, "model": model}, action_key="mode")
                supervised, zero_shot = target.opened("supervised"), target.opened("zero-shot")
    return tabs, text, mode, model, target, supervised, zero_shot


def test_a_link_fills_the_controls_and_fires_the_trigger_of_its_action(classify_like):
    tabs, text, mode, model, target, supervised, zero_shot = classify_like
    state = links.decode_state("tab=classify&text=Cells&mode=zero-shot&model=large", {"classify": target.defaults})
    updates = target.restored(state, tabs)
    assert updates[text] == "Cells" and updates[mode] == "zero-shot" and updates[model] == "large"
    assert zero_shot in updates and supervised not in updates  # only the zero-shot run fires
    assert updates[tabs].selected == "classify"


@pytest.mark.parametrize("query, sentence", [
    ("tab=classify&model=%3Cevil%3E", "The link's model must be one of bundled, large, not '<evil>'."),
    ("tab=classify&mode=admin", "The link's mode must be one of supervised, zero-shot, not 'admin'."),
])
def test_a_value_no_control_takes_is_refused_with_a_sentence(classify_like, query, sentence):
    tabs, *_, target, _, _ = classify_like
    state = links.decode_state(query, {"classify": target.defaults})
    with pytest.raises(ValueError) as refused:
        target.restored(state, tabs)
    assert str(refused.value) == sentence
