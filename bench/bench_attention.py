"""Attention tab speed and size on microsoft/biogpt's shape (random weights).

    .venv/bin/python bench/bench_attention.py [--repeats 3] [--tokens 256] [--long 1024] [--device cpu]

1. Whole analysis vs a plain forward with attentions, alternating, medians: the ratio must be <= 1.5.
2. Every later change of layer, head, view or toggle through the function the UI calls
   (`ui.attention_tab.render_view`) plus the figure's JSON (what gr.Plot sends): <= 100 ms each.
   The first opening of the logit lens, the generation replay and an ablation run the model's
   weights by nature; they are reported apart.
3. Bytes sent to the browser per view (the plotly JSON) at --tokens and --long tokens, and the
   size of the full attention tensor the browser never receives; then the layer the page redraws a
   heatmap from (its heads, the layer's mean and the sink toggle's row totals), sent after each heatmap.
4. Teaching (issue 16) at --tokens and --long tokens: head roles (the probe's one batched forward
   against a plain forward with attentions of the same probe, then the cached answer), the
   ablated analysis of a comparison against a plain forward of the text, a comparison's views
   once both sides are cached (alignment, attention and statistics differences: view changes,
   <= 100 ms each), and the formula on one real row. `--teaching-only` runs just this part.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from common import REPO, alternate, full_size_checkpoint, machine

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def text_of(tokenizer, tokens: int) -> str:
    """A PubMed text from the shared corpus cut to exactly `tokens` tokens (with the leading </s>)."""
    corpus = REPO.parent / "shared" / "data" / "pubmed-corpus" / "pubmed_docs.jsonl"
    text = ""
    with corpus.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            text += " " + record.get("title", "") + " " + record.get("abstract", "")
            encoding = tokenizer(text.strip(), return_offsets_mapping=True)
            if len(encoding["input_ids"]) >= tokens:
                break
    text = text.strip()
    end = tokenizer(text, return_offsets_mapping=True)["offset_mapping"][tokens - 1][1]
    text = text[:end]
    assert len(tokenizer(text)["input_ids"]) == tokens, len(tokenizer(text)["input_ids"])
    return text


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (and, for memoised views, the first computation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--long", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--teaching-only", action="store_true", help="only part 4 (head roles, side by side, formula)")
    parser.add_argument("--layer-data-only", action="store_true", help="only part 3b (the layer the page redraws from)")
    args = parser.parse_args()
    if args.teaching_only:
        from biogpt import BioGptForCausalLM
        from biogpt.tokenizer import BioGptTokenizer

        model = BioGptForCausalLM.from_pretrained(full_size_checkpoint(), device=args.device).eval()
        tokenizer = BioGptTokenizer.from_pretrained(REPO / "assets" / "tokenizers" / "biogpt")
        print(f"# Attention teaching benchmark on {machine()}, device {args.device}, microsoft/biogpt shape, random weights\n")
        teaching_costs(model, tokenizer, args)
        return

    from biogpt import BioGptForCausalLM, interpret
    from biogpt.tokenizer import BioGptTokenizer
    from ui.attention_tab import VIEWS, Controls, render_view

    model = BioGptForCausalLM.from_pretrained(full_size_checkpoint(), device=args.device).eval()
    tokenizer = BioGptTokenizer.from_pretrained(REPO / "assets" / "tokenizers" / "biogpt")
    engine = interpret.Interpreter(lambda name: (model, tokenizer), default_model="full-random")
    print(f"# Attention benchmark on {machine()}, device {args.device}, microsoft/biogpt shape, random weights\n")

    text = text_of(tokenizer, args.tokens)
    if args.layer_data_only:
        layer_data_costs(engine, {args.tokens: text, args.long: text_of(tokenizer, args.long)}, args.repeats)
        return

    # ----- 1. analysis vs plain forward ---------------------------------------------------------
    ids = torch.tensor([tokenizer(text)["input_ids"]], device=args.device)

    def forward():
        with torch.inference_mode():
            out = model(ids, output_attentions=True)
            out.logits.sum().item()  # waits for the device

    medians = alternate({"forward": forward, "analysis": lambda: interpret.analyze(model, tokenizer, text, "x")},
                        repeats=args.repeats)
    ratio = medians["analysis"] / medians["forward"]
    print(f"## {args.tokens} tokens: whole analysis vs plain forward with attentions (medians of {args.repeats})")
    print(f"forward {medians['forward']:.3f} s · analysis {medians['analysis']:.3f} s · ratio {ratio:.2f} (target <= 1.5)\n")

    # ----- 2. view changes ----------------------------------------------------------------------
    analysis = engine.analyze(text)
    first_open = {}
    for name, fn in {"logit lens (first opening)": lambda: engine.logit_lens(analysis),
                     "generation replay, 20 tokens (first opening)": lambda: engine.trace_generation(analysis, 20),
                     "ablation of one head (first run)": lambda: engine.ablate(analysis, [(5, 3)])}.items():
        start = time.perf_counter()
        fn()
        first_open[name] = time.perf_counter() - start
    changes = [
        ("heatmap: layer 1 head 1", Controls(layer=1, head=1)),
        ("heatmap: layer 12 head 7", Controls(layer=12, head=7)),
        ("heatmap: layer 24 head 16", Controls(layer=24, head=16)),
        ("heatmap: hide sink + threshold 0.05", Controls(layer=24, head=16, hide_sink=True, min_weight=0.05)),
        ("heatmap: mean of the layer's heads", Controls(layer=12, aggregate="heads")),
        ("heatmap: mean of a head across layers", Controls(head=3, aggregate="layers")),
        ("heatmap: mean of every head", Controls(aggregate="all")),
        ("heatmap: rollout to layer 24", Controls(layer=24, aggregate="rollout")),
        ("overview: entropy", Controls(view="Overview")),
        ("overview: previous-token share", Controls(view="Overview", statistic="previous")),
        ("token links: one head", Controls(view="Token links", layer=6, head=2, token="10")),
        ("token links: every head", Controls(view="Token links", layer=6, aggregate="heads", token="10")),
        ("hidden states: norms + PCA of 5 tokens", Controls(view="Hidden states")),
        ("logit lens: first 16 positions", Controls(view="Logit lens")),
        ("logit lens: window at 200 + watch list", Controls(view="Logit lens", start=200, watch="cancer, the, of")),
        ("generation replay: step 5, one head", Controls(view="Generation replay", step=5, layer=20, head=4)),
        ("generation replay: step 12, mean of heads", Controls(view="Generation replay", step=12, aggregate="heads")),
        ("ablation: cached head set", Controls(view="Ablation", heads_off="6.4")),
    ]
    print(f"## {args.tokens} tokens: server time of a view change (render_view + figure JSON, median of {max(args.repeats, 7)})")
    print("| change | ms | JSON bytes |\n|---|---:|---:|")
    worst = 0.0
    for name, controls in changes:
        seconds = timed(lambda: render_view(engine, text, controls).figure.to_json(), max(args.repeats, 7))
        size = len(render_view(engine, text, controls).figure.to_json().encode())
        worst = max(worst, seconds)
        print(f"| {name} | {1000 * seconds:.1f} | {size:,} |")
    print(f"\nslowest view change: {1000 * worst:.1f} ms (target <= 100 ms)")
    for name, seconds in first_open.items():
        print(f"{name}: {seconds:.2f} s ({seconds / medians['forward']:.2f} plain forwards)")

    # ----- 3. payloads (and warm view times) at both lengths ---------------------------------------
    import resource

    print("\n## Bytes sent to the browser per view (plotly JSON), and warm server time")
    sizes: dict[int, dict[str, tuple[int, float]]] = {}
    for tokens in (args.tokens, args.long):
        current = text if tokens == args.tokens else text_of(tokenizer, tokens)
        current_analysis = engine.analyze(current)
        sizes[tokens] = {}
        for view in VIEWS:
            controls = Controls(view=view, layer=12, head=5, heads_off="6.4")
            render_view(engine, current, controls)  # first opening computes what the view needs
            seconds = timed(lambda: render_view(engine, current, controls).figure.to_json(), args.repeats)
            sizes[tokens][view] = (len(render_view(engine, current, controls).figure.to_json().encode()), seconds)
        full = current_analysis.attentions.size * 4
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        gpu = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if args.device.startswith("cuda") else ""
        print(f"{tokens} tokens: analysed in {current_analysis.seconds:.1f} s; the full float32 attention tensor would be "
              f"{full / 2**20:,.0f} MiB; the cached analysis holds {current_analysis.nbytes / 2**20:,.0f} MiB "
              f"(float16, memoised views included); process peak RSS so far {peak:.1f} GiB{gpu}")
    print("\n| view | " + " | ".join(f"{t} tokens: KiB | ms" for t in sizes) + " |\n|---|" + "---:|---:|" * len(sizes))
    for view in VIEWS:
        print(f"| {view} | "
              + " | ".join(f"{sizes[t][view][0] / 1024:,.0f} | {1000 * sizes[t][view][1]:.0f}" for t in sizes) + " |")
    layer_data_costs(engine, {tokens: (text if tokens == args.tokens else text_of(tokenizer, tokens)) for tokens in sizes},
                     args.repeats)

    teaching_costs(model, tokenizer, args)


def layer_data_costs(engine, texts: dict[int, str], repeats: int) -> None:
    """Part 3b: the layer the page redraws a heatmap from (ui.attention_heatmap, issue 15): what the server
    sends after each heatmap it draws and for each layer change, its bytes and its server time: the first
    payload of a text builds the figure frame around the numbers (plotly), later ones find it cached."""
    from ui import attention_heatmap
    from ui.attention_tab import Controls, redraw_data, render_view

    print("\n## The layer sent for redrawing in the page (JSON bytes; server ms: a text's first payload, then median)")
    print("| text | shape of the maps | KiB | first ms | later ms |\n|---|---|---:|---:|---:|")
    for tokens, current in texts.items():
        for what, controls in (("whole text", Controls(layer=12)), ("sink hidden", Controls(layer=12, hide_sink=True)),
                               ("zoom window at 300", Controls(layer=12, start=300))):
            if controls.start and tokens <= 256:
                continue
            render_view(engine, current, controls)
            attention_heatmap._frame_json.cache_clear()
            started = time.perf_counter()
            json.dumps(redraw_data(engine, current, controls))
            first = time.perf_counter() - started
            payload = redraw_data(engine, current, controls)
            seconds = timed(lambda: json.dumps(redraw_data(engine, current, controls)), repeats)
            shape = "pooled, this toggle only" if payload["pooled"] else "one token a cell, both toggles"
            print(f"| {tokens} tokens, {what} | {shape} | {len(json.dumps(payload)) / 1024:,.0f} | {1000 * first:.0f} | "
                  f"{1000 * seconds:.0f} |")


def teaching_costs(model, tokenizer, args) -> None:
    """Part 4 (see the module docstring): head roles, side by side and the formula row."""
    from biogpt import interpret

    engine = interpret.Interpreter(lambda name: (model, tokenizer), default_model="full-random")

    def plain_forward(ids, **kwargs):
        def run():
            with torch.inference_mode():
                out = model(ids, output_attentions=True, use_cache=False, **kwargs)
                out.logits.sum().item()
        return run

    repeats = max(args.repeats, 3)
    print("\n## Teaching (issue 16): head roles, side by side, the formula on one row")
    roles = engine.head_roles()
    probe = torch.from_numpy(roles.probe).to(args.device)
    medians = alternate({"forward": plain_forward(probe), "roles": lambda: interpret.head_roles(model, "x")},
                        repeats=repeats)
    cached = timed(lambda: engine.head_roles(), max(repeats, 7))
    print(f"head roles: probe of {roles.probe.shape[0]} x {roles.probe.shape[1]} tokens, {roles.forwards} forward; "
          f"{medians['roles']:.3f} s vs a plain forward of the probe with attentions {medians['forward']:.3f} s: "
          f"ratio {medians['roles'] / medians['forward']:.2f} (target <= 1.5); cached {1000 * cached:.2f} ms")
    from ui.teach_tab import roles_grid, roles_table

    panel = max(timed(lambda: (roles_grid(roles, role).to_json(), roles_table(roles, role)), max(repeats, 7))
                for role in interpret.ROLES)
    print(f"head roles panel (the grid's figure JSON and the sorted table, roles cached): at most {1000 * panel:.1f} ms"
          " a role (target <= 100 ms)")
    print("\n| tokens | ablated analysis / plain forward (heads 6.4 off) | formula row, first, s | formula row / plain forward |"
          "\n|---:|---:|---:|---:|")
    for tokens in (args.tokens, args.long):
        text = text_of(tokenizer, tokens)
        ids = torch.tensor([tokenizer(text)["input_ids"]], device=args.device)
        mask = interpret.head_mask_for([(5, 3)], model.config.num_hidden_layers, model.config.num_attention_heads)
        mask = mask.to(device=model.device, dtype=model.dtype)
        medians = alternate({"forward": plain_forward(ids, head_mask=mask),
                             "ablated": lambda: interpret.analyze(model, tokenizer, text, "x", head_mask=mask)},
                            repeats=args.repeats)
        analysis = engine.analyze(text)
        start = time.perf_counter()
        engine.attention_row(analysis, 11, 4, tokens - 1)
        formula = time.perf_counter() - start
        ratio = medians["ablated"] / medians["forward"]
        print(f"| {tokens} | {ratio:.2f} | {formula:.2f} | {formula / medians['forward']:.2f} |")
    compare_view_costs(engine, tokenizer, (args.tokens, args.long), max(repeats, 7))


def compare_view_costs(engine, tokenizer, lengths, repeats: int) -> None:
    """Server time of a comparison's views once both sides are cached: view changes, <= 100 ms.

    Each comparison is timed on its own: at 1,024 tokens one analysis holds 821 MiB, so the default
    2 GiB cache keeps the two sides of one comparison, not those of two comparisons at once."""
    print("\n| tokens | two texts: alignment + attention and statistics differences, ms | "
          "with and without heads 6.4: attention difference (window), ms |\n|---:|---:|---:|")
    for tokens in lengths:
        text = text_of(tokenizer, tokens)
        other = text_of(tokenizer, tokens - 3) + " aspirin"  # a different ending, still within 1,024 positions

        def texts():
            comparison = engine.compare_texts(text, other)
            comparison.alignment_sentence()
            comparison.heatmap_difference(11, 4)
            comparison.statistics_difference("entropy")

        def ablation():
            engine.compare_ablation(text, [(5, 3)]).heatmap_difference(5, 3, start=tokens - 200)

        print(f"| {tokens} | {1000 * timed(texts, repeats):.1f} | {1000 * timed(ablation, repeats):.1f} |")

if __name__ == "__main__":
    main()
