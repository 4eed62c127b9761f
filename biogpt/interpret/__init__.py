"""Looking inside BioGPT: one forward pass becomes an `Analysis`; every view is derived from it.

One module per concern:
  analysis       `analyze` (one forward with attentions and hidden states, kept as numpy) and the
                 `Analysis` it returns, whose views are memoised; `nbytes`/`owned` for its memory
  attention      per-head statistics, rollout, token links and the heatmap's display steps
  hidden_states  hidden-state norms and PCA paths
  labels         readable token strings (BPE pieces, the vocabulary, an analysed text)
  lens           the logit lens and the watch list (the model's weights, no new forward)
  probes         head ablation and the generation trace (new forwards, through generation's run)
  roles          head roles (previous-token, induction, duplicate, sink, locality) on a probe of its own
  compare        two analyses side by side: token alignment and the differences where defined
  formula        the attention formula on one real row (q.k/sqrt(d), mask, softmax, weighted values)
  attribution    which input tokens drove one next-token choice: gradient x input, integrated
                 gradients (completeness checked), occlusion; contrastive targets; word scores
  cache          `AnalysisCache` (a byte-bounded biogpt.lru.BuildOnceLRU) and the `Interpreter`
                 the engine delegates to

Indices here are 0-based (layer 0 is the first decoder layer); the UI shows them 1-based.
Nothing here imports gradio or plotly.
"""

from .analysis import TOP_K, Analysis, analyze, nbytes, owned, too_long_message
from .attention import (
    AGGREGATES,
    STATISTICS,
    HeatmapCells,
    block_max,
    causal_mask,
    head_statistics,
    heatmap_cells,
    hide_first_token,
    mean_over,
    rollout,
    threshold,
    token_links,
    window,
)
from .attribution import METHODS as ATTRIBUTION_METHODS
from .attribution import OCCLUSIONS, Attribution, attribute
from .cache import DEFAULT_CACHE_BYTES, AnalysisCache, Interpreter, release_free_memory
from .hidden_states import hidden_norms, pca_trajectories
from .labels import CONTINUES, input_labels, piece_label, vocab_labels
from .lens import LENS_K, LogitLens, WatchList, lens_column, lens_project, logit_lens, watch_ranks, word_token
from .roles import ROLES, HeadRoles, head_roles, role_scores
from .formula import AttentionRow, attention_row
from .compare import AlignedDifference, Comparison, LensDifference, TokenAlignment, compare, token_alignment
from .probes import (
    Ablation,
    GenerationTrace,
    ablate,
    greedy_continuation,
    greedy_run,
    head_mask_for,
    parse_heads,
    trace_generation,
)

__all__ = [
    "ATTRIBUTION_METHODS", "OCCLUSIONS", "Attribution", "attribute",
    "AGGREGATES", "CONTINUES", "DEFAULT_CACHE_BYTES", "LENS_K", "STATISTICS", "TOP_K",
    "Ablation", "Analysis", "AnalysisCache", "GenerationTrace", "HeatmapCells", "Interpreter", "LogitLens", "WatchList",
    "ablate", "analyze", "block_max", "causal_mask", "greedy_continuation", "greedy_run", "head_mask_for",
    "head_statistics", "heatmap_cells", "hidden_norms", "hide_first_token", "input_labels", "lens_column", "lens_project",
    "logit_lens", "mean_over", "nbytes", "owned", "parse_heads", "pca_trajectories", "piece_label", "release_free_memory",
    "rollout", "threshold", "token_links", "too_long_message", "trace_generation", "vocab_labels", "watch_ranks",
    "window", "word_token",
    # head roles (issue 16)
    "ROLES", "HeadRoles", "head_roles", "role_scores",
    # side by side (issue 16)
    "AlignedDifference", "Comparison", "LensDifference", "TokenAlignment", "compare", "token_alignment",
    "AttentionRow", "attention_row",
]
