"""Image-text pieces the methods share: multi-head attention helpers and the [choice]
initialisation (:mod:`~clipfuse.fusion.attention`), the cosine score map (method.md section 1).
The Conv-Former itself is :mod:`clipfuse.models.convformer`."""

from clipfuse.fusion.attention import init_weights, merge_heads, split_heads
from clipfuse.fusion.score_map import cosine_score_map

__all__ = ["cosine_score_map", "init_weights", "merge_heads", "split_heads"]
