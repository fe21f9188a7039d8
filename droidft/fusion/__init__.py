"""Adapter fusion: weighted, layered, TIES and DARE merging of LoRA/DoRA adapters.

Averaging the A and B matrices of several adapters separately is *not* the average of
their updates (mean(B)·mean(A) != mean(B·A)). Fusion here works on the updates: for every
adapted linear layer, each adapter's update is delta_i = scale_i · B_i·A_i (in mlx-lm's
layout, `scale * lora_b.T @ lora_a.T`, shape (out, in)); for a DoRA adapter it is the
effective change of the weight, m/||W + sBA||·(W + sBA) - W. The merged update

    linear:  D = sum_i w_i(layer) · delta_i
    ties:    trim each delta_i to its largest `density` fraction, elect a sign per
             element from the weighted sum, keep only agreeing entries (weighted mean
             when `normalize`)
    dare:    drop each entry of delta_i with probability 1 - density, rescale by
             1/density, then the weighted sum (or TIES sign election with `ties_sign`)

is then either
    (a) `to="adapter"`: re-factorised to a rank-R LoRA adapter by truncated SVD
        (D ≈ U_R S_R V_R^T, lora_b = sqrt(S_R) U_R^T, lora_a = V_R sqrt(S_R), scale 1),
        reporting the retained energy sum(S_R^2)/sum(S^2); stock `mlx_lm.load(model,
        adapter_path=...)` loads it;
    (b) `to="model"`: added to the base weights (a quantised base is de-quantised) and
        saved in the `mlx_lm fuse` layout.

For linear fusion of LoRA adapters the SVD never forms D: D = U_cat V_cat^T with
U_cat = [w_i s_i B_i^T], V_cat = [A_i], so two thin QRs and an SVD of a (sum of ranks)²
core give the exact singular values. At rank >= sum of the input ranks the fused adapter
is exact (to float tolerance).

Every fused artifact records its provenance (inputs, weights, method, parameters, rank,
retained energy) in `fusion.json` beside the weights and as a store artifact.

maths.py          the merging maths on numpy arrays (update, TIES, DARE, SVDs), FusionError
layer_weights.py  per-layer weights: global, a table, ranges or a linear schedule
merge.py          `fuse`: load, merge per layer, write an adapter or a model, record provenance
"""

from .layer_weights import SUM_TOLERANCE, layer_index, layer_weight_table, read_layer_weights
from .maths import (FusionError, blas_threads, dare_drop, factored_svd, lora_update, ties_merge,
                    truncated_svd)
from .merge import METHODS, OUTPUTS, FusionResult, fuse, fused_artifacts, load_factors, update_of

__all__ = [
    "METHODS", "OUTPUTS", "FusionError", "FusionResult", "fuse", "fused_artifacts", "update_of",
    "load_factors", "lora_update", "ties_merge", "dare_drop", "truncated_svd", "factored_svd",
    "blas_threads", "SUM_TOLERANCE", "layer_index", "layer_weight_table", "read_layer_weights",
]
