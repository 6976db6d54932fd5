"""Vision SAE quality: reconstruction, sparsity by token type, and the zero-shot cost of splicing the SAE in.

`evaluate_sae` / `evaluate_saes` (evaluate.py) stream images through the model once per SAE; the
float64 running sums and their definitions live in stats.py. Names load on first use.
"""

from sae_clip_plugin._lazy import lazy_exports

_EXPORTS = {
    "evaluate_sae": "evaluate",
    "evaluate_saes": "evaluate",
    "metrics_table": "evaluate",
    "to_markdown": "evaluate",
    "describe_sae": "evaluate",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
