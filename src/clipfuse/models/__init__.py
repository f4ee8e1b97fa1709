from clipfuse.models.factory import METHODS, create_model, method_uses_text
from clipfuse.models.registry import is_model, list_models, register_model
from clipfuse.models.segmentor import Segmentor

__all__ = [
    "METHODS",
    "Segmentor",
    "create_model",
    "is_model",
    "list_models",
    "method_uses_text",
    "register_model",
]
