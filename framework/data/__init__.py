"""Data: the embedded SyntheticWorld, VideoFolder for real files, and PyAV video I/O."""
from .synthetic import SyntheticWorld
from .video_folder import VideoFolder
from .video_io import read_clip, probe_video, write_video

__all__ = ["SyntheticWorld", "VideoFolder", "read_clip", "probe_video", "write_video"]
