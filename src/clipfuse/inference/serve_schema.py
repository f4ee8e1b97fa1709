"""The JSON shapes of ``clipfuse serve``'s API (pydantic models): FastAPI checks the answers
against them and documents them at ``/docs`` and ``/openapi.json``."""

from pydantic import BaseModel, Field


class Timing(BaseModel):
    """Where the time of one request went, in milliseconds."""

    wait_ms: float = Field(description="queued behind other requests")
    preprocess_ms: float = Field(description="decoding the upload to RGB")
    model_ms: float = Field(
        description="ClipfuseModel.predict: resizing, the network, the argmax at the image's size"
    )
    postprocess_ms: float = Field(description="the per-class areas and the label PNG")


class Prediction(BaseModel):
    """The segmentation of one uploaded image."""

    label_map: str = Field(
        description="data:image/png;base64 URL of a palette PNG of the image's size: pixel "
        "value k is class k (class_names[k]), shown in palette[k]"
    )
    width: int = Field(description="image width in pixels")
    height: int = Field(description="image height in pixels")
    mode: str = Field(
        description="decoder (the head's logits), or in open vocabulary score_map or "
        "text_classifier"
    )
    class_names: list[str] = Field(description="the labels predicted, in index order")
    palette: list[list[int]] = Field(
        description="RGB colour of each class, distinct (a colour names one class)"
    )
    areas: list[float] = Field(description="fraction of the pixels given to each class; sum 1")
    timing: Timing


class Info(BaseModel):
    """The model served and the server's limits."""

    method: str
    backbone: str
    class_names: list[str] = Field(description="the trained vocabulary")
    open_vocab: bool = Field(description="whether labels outside the vocabulary can be asked for")
    text_encoder: str | None = Field(description="the encoder that embeds new labels")
    max_bytes: int = Field(description="largest upload accepted")
    max_pixels: int = Field(description="largest image accepted (width x height)")
    queue: int = Field(description="requests admitted at once; more get 503 with Retry-After")
    examples: list[str] = Field(description="example images, at /examples/{name}")
    examples_licence: str | None = Field(description="the examples' licence line")
    examples_licence_file: str | None = Field(description="their licence, at /examples/{name}")


class Problem(BaseModel):
    """A request that could not be answered: the message says why and what to do."""

    error: str
