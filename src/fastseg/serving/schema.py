"""The HTTP contract's shapes: PaddleX's request and response bodies (pydantic, for validation
and the OpenAPI document) and what the app needs from a segmenter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fastseg.errors import InputError
from fastseg.engines.session_base import CancelToken
from fastseg.model_dir import ModelMeta

Side = Annotated[int, Field(ge=1, le=16384)]
NoResize = Literal[-1]


class SegmenterLike(Protocol):
    """What the app needs from ``fastseg.segmenter.Segmenter`` (a stub can stand in for tests)."""

    @property
    def meta(self) -> ModelMeta: ...

    def predict_images(
        self, images_bgr: Sequence[npt.NDArray[np.uint8]], *, target_size: Any = None, cancel: CancelToken | None = None
    ) -> list[Any]: ...


Alpha = Annotated[float, Field(ge=0.0, le=1.0)]


class InferRequest(BaseModel):
    """PaddleX's ``semantic_segmentation.InferRequest`` plus opt-in fastseg extensions
    (``labelMapFormat``, ``scores``, ``overlay``); without them the response is PaddleX's, byte for byte."""

    model_config = ConfigDict(extra="ignore")

    image: str = Field(
        min_length=1, description="Base64 of the image file bytes (PNG/JPEG/BMP/WEBP), or an http(s) URL."
    )
    targetSize: Side | NoResize | tuple[Side, Side] | tuple[NoResize, NoResize] | None = Field(
        default=None,
        description="Inference size as PaddleX: an int (square) or [width, height]; -1 = no resize; "
        "default: the model's own Resize.",
    )
    visualize: bool | None = Field(default=None, description="Return result.image; default: the server config.")
    labelMapFormat: Literal["json", "png"] = Field(
        default="json",
        description="'png': result.labelMapPng (base64 single-channel PNG, uint8 or uint16) instead of labelMap.",
    )
    scores: bool = Field(
        default=False,
        description="fastseg extension: also return result.scoreMapPng, base64 8-bit grey PNG of each pixel's "
        "winning-class probability (round(255 * p)); needs a server started with 'scores: true'.",
    )
    overlay: bool | Alpha | None = Field(
        default=None,
        description="fastseg extension: also return result.overlayImage, base64 JPEG of the colour map blended "
        "over the input with this weight (0..1; true = 0.4).",
    )


class InferResult(BaseModel):
    labelMap: list[int] | None = Field(default=None, description="Row-major class ids, length H*W.")
    labelMapPng: str | None = Field(default=None, description="Only with labelMapFormat='png'.")
    size: tuple[int, int] = Field(description="[H, W] of the label map (the input image's size).")
    image: str | None = Field(default=None, description="Base64 JPEG of the colour map, or null.")
    scoreMapPng: str | None = Field(default=None, description="fastseg extension: only with scores=true.")
    overlayImage: str | None = Field(default=None, description="fastseg extension: only with overlay.")


class InferResponse(BaseModel):
    logId: str
    errorCode: Literal[0] = 0
    errorMsg: Literal["Success"] = "Success"
    result: InferResult


class NoResultResponse(BaseModel):
    logId: str
    errorCode: int
    errorMsg: str


#: The inference endpoint's failure statuses, for the OpenAPI document.
INFER_ERRORS: dict[int, str] = {
    401: "API key missing or wrong",
    408: "body not received within body_timeout_s",
    413: "body over max_body_bytes",
    422: "invalid input: bad base64, not an image, truncated or corrupt container, zero size, over "
    "max_pixels or max_input_pixels, refused or slow URL",
    503: "overloaded or timed out; see Retry-After",
    500: "server fault",
}


def parse_request(body: bytes | bytearray) -> InferRequest:
    """JSON body -> ``InferRequest``; a one-line ``InputError`` naming up to five bad fields."""
    try:
        return InferRequest.model_validate_json(body)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise InputError(f"invalid request body: {reasons}.") from exc
