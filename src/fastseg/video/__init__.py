"""Video, stream and camera segmentation (``Segmenter.predict_video``, ``fastseg predict --input clip.mp4``).

``sources``: what can be read and how (OpenCV); ``pipeline``: the bounded-queue threads;
``writer``: the result video and label PNGs; ``run``: ``predict_video`` and ``video_to_dir``.
Below ``fastseg.segmenter`` in the layering: it drives anything with ``predict_images``.
"""

from fastseg.video.run import FrameResult, RenderOptions, VideoOutcome, predict_video, video_to_dir
from fastseg.video.sources import VideoInfo, VideoSource, is_video_input, video_source, videos_in

__all__ = [
    "FrameResult",
    "RenderOptions",
    "VideoInfo",
    "VideoOutcome",
    "VideoSource",
    "is_video_input",
    "predict_video",
    "video_source",
    "video_to_dir",
    "videos_in",
]
