from clipfuse.models.factory import METHODS, create_model, method_uses_text
from clipfuse.models.segmentor import Segmentor

__all__ = [
    "METHODS",
    "Segmentor",
    "create_model",
    "method_uses_text",
]
