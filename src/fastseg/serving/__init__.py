"""HTTP serving (the ``[serve]`` extra): ``create_app(segmenter, config)`` and its config."""

from fastseg.serving.app import create_app
from fastseg.serving.schema import InferRequest, InferResponse, SegmenterLike
from fastseg.serving.config import ServingConfig, ServingConfigError, UrlInputConfig, load_serving_config
from fastseg.serving.guard import INFER_ENDPOINT
from fastseg.serving.inputs import ImageDecoder, decode_image_bytes

__all__ = [
    "INFER_ENDPOINT",
    "ImageDecoder",
    "InferRequest",
    "InferResponse",
    "SegmenterLike",
    "ServingConfig",
    "ServingConfigError",
    "UrlInputConfig",
    "create_app",
    "decode_image_bytes",
    "load_serving_config",
]
