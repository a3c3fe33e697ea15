"""Face-mesh landmarks per frame with mediapipe (optional: ``pip install 'mmfuse[face]'``).

mediapipe's face-mesh solution ships its model inside the wheel: 468 landmarks, 478 with the iris refinement
(``refine_landmarks=True``), each ``(x, y, z)`` normalised to the frame (x, y in ``[0, 1]``). Blendshapes need
the separate ``face_landmarker.task`` model file, which is not packaged; they are not produced.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mmfuse.extract.base import ExtractedStream, Extractor, Media, check_positive, register_extractor

__all__ = ["FaceExtractor"]


def _face_mesh_module() -> Any:
    try:
        from mediapipe.python.solutions import face_mesh
    except ImportError as exc:
        raise ImportError(
            "The 'face' extractor needs mediapipe; install it with: pip install 'mmfuse[face]' (mediapipe==0.10.14)."
        ) from exc
    return face_mesh


@register_extractor("face")
class FaceExtractor(Extractor):
    """Landmarks of the most prominent face in frames sampled at ``rate`` Hz.

    Stream ``face_landmarks`` (continuous, ``D`` = 478 × 3 with ``refine=True``, else 468 × 3), one row per
    frame in which a face was found; frames without a face are left out, so alignment masks those steps.

    Args:
        rate: Frame sampling rate in Hz.
        max_side: Frames are scaled down so their longer side is at most this.
        refine: Add the 10 iris landmarks.
        min_confidence: Detection confidence threshold.

    Example:
        >>> FaceExtractor().config()
        {'rate': 5.0, 'max_side': 480, 'refine': True, 'min_confidence': 0.5}
    """

    version: ClassVar[str] = "1"
    needs: ClassVar[str] = "video"
    streams: ClassVar[tuple[str, ...]] = ("face_landmarks",)

    def __init__(
        self, rate: float = 5.0, max_side: int = 480, refine: bool = True, min_confidence: float = 0.5
    ) -> None:
        self.rate = check_positive(rate, "rate", "FaceExtractor")
        self.max_side = int(check_positive(max_side, "max_side", "FaceExtractor"))
        self.refine = bool(refine)
        if not 0.0 <= float(min_confidence) <= 1.0:
            raise ValueError(
                f"The 'min_confidence' parameter of FaceExtractor must be in [0, 1]. Got {min_confidence!r} instead."
            )
        self.min_confidence = float(min_confidence)

    def __call__(self, media: Media) -> dict[str, ExtractedStream]:
        """Return ``face_landmarks`` for ``media`` (nothing when no frame shows a face)."""
        face_mesh = _face_mesh_module()
        times, frames = media.frames(self.rate, self.max_side)
        n_points = 478 if self.refine else 468
        rows: list[np.ndarray] = []
        keep: list[int] = []
        with face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=1,
            refine_landmarks=self.refine,
            min_detection_confidence=self.min_confidence,
        ) as mesh:
            for i, frame in enumerate(frames):  # mediapipe takes one image per call
                found = mesh.process(np.ascontiguousarray(frame)).multi_face_landmarks
                if found:
                    lm = found[0].landmark
                    rows.append(np.array([(p.x, p.y, p.z) for p in lm], dtype=np.float32).reshape(-1))
                    keep.append(i)
        if not rows:
            return {}
        values = np.stack(rows)  # [F', n_points * 3]
        if values.shape[1] != n_points * 3:
            raise ValueError(f"mediapipe returned {values.shape[1] // 3} landmarks; expected {n_points}.")
        return {
            "face_landmarks": ExtractedStream(
                "continuous", times[np.asarray(keep)], values, meta={"points": n_points, "frames": len(times)}
            )
        }
