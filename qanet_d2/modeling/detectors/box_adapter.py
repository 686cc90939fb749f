"""From a detector's face box and landmarks to the head box the parser was trained on.

WIDER FACE boxes (YuNet's) are tight on the face, roughly brow to chin and ear to ear; the
parser is trained on head boxes (hair top to chin, ears included; ``fasseg_face_box``). The
adapter is linear in the landmarks expressed in the face box's frame: with ``c`` the face box
centre, ``(w, h)`` its size and ``(u_k, v_k) = ((x_k - c_x) / w, (y_k - c_y) / h)`` the five
landmarks,

    f = [1, u_1 .. u_5, v_1 .. v_5]                      (11 features)
    t = M f                                              (M: 4 x 11)
    head box = (c_x + t_0 w, c_y + t_1 h, c_x + t_2 w, c_y + t_3 h)

so the head box follows the face's turn (the nose's offset from the eyes) and tilt. ``M`` is
fitted by least squares on faces whose head box is known (:func:`fit_head_box_adapter`,
``tools/fit_box_adapter.py``) and lives in the config (``MODEL.QANET.DETECTOR.BOX_ADAPTER``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["HeadBoxAdapter", "adapter_features", "fit_head_box_adapter", "NUM_ADAPTER_FEATURES"]

NUM_ADAPTER_FEATURES = 11


def _frame(face_boxes: torch.Tensor):
    centre = (face_boxes[:, :2] + face_boxes[:, 2:]) / 2
    size = (face_boxes[:, 2:] - face_boxes[:, :2]).clamp(min=1e-6)
    return centre, size


def adapter_features(face_boxes: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """``N x 11`` features of ``N x 4`` XYXY face boxes and their ``N x 5 x 2`` (or ``x 3``) landmarks."""
    centre, size = _frame(face_boxes)
    uv = (landmarks[..., :2] - centre[:, None]) / size[:, None]  # N x 5 x 2
    ones = face_boxes.new_ones((len(face_boxes), 1))
    return torch.cat([ones, uv[..., 0], uv[..., 1]], dim=1)


class HeadBoxAdapter(nn.Module):
    """Head boxes (``N x 4`` XYXY) of face boxes and landmarks (module docstring); ``weights``: the
    44 numbers of ``M`` (row-major 4 x 11)."""

    def __init__(self, weights: Sequence[float]):
        super().__init__()
        w = torch.as_tensor(list(weights), dtype=torch.float32)
        if w.numel() != 4 * NUM_ADAPTER_FEATURES:
            raise ValueError(f"MODEL.QANET.DETECTOR.BOX_ADAPTER needs {4 * NUM_ADAPTER_FEATURES} numbers (4 x 11); got {w.numel()}")
        self.register_buffer("weights", w.view(4, NUM_ADAPTER_FEATURES), persistent=False)

    def forward(self, face_boxes: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        if len(face_boxes) == 0:
            return face_boxes.new_zeros((0, 4))
        f = adapter_features(face_boxes.float(), landmarks.float())
        t = f @ self.weights.to(f.device).T  # N x 4
        centre, size = _frame(face_boxes.float())
        head = torch.cat([centre + t[:, :2] * size, centre + t[:, 2:] * size], dim=1)
        # never inverted: at least a pixel wide and high
        head[:, 2:] = torch.maximum(head[:, 2:], head[:, :2] + 1.0)
        return head


def fit_head_box_adapter(face_boxes: torch.Tensor, landmarks: torch.Tensor, head_boxes: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """Least-squares ``M`` (4 x 11, float64) mapping the features of ``face_boxes``/``landmarks``
    to ``head_boxes`` in the face box's frame; ``ridge`` (times the number of faces) keeps it
    defined for few or degenerate faces (the constant column is not shrunk)."""
    face_boxes, landmarks, head_boxes = face_boxes.double(), landmarks.double(), head_boxes.double()
    f = adapter_features(face_boxes, landmarks)
    centre, size = _frame(face_boxes)
    t = torch.cat([(head_boxes[:, :2] - centre) / size, (head_boxes[:, 2:] - centre) / size], dim=1)
    reg = torch.eye(NUM_ADAPTER_FEATURES, dtype=torch.float64) * ridge * len(f)
    reg[0, 0] = 0.0
    m = torch.linalg.solve(f.T @ f + reg, f.T @ t)  # 11 x 4
    return m.T
