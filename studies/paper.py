"""The InfoReg paper's published CREMA-D numbers that are available to us (accuracy, %).

Transcribed from ``../shared/METHOD.md``, "Published numbers" (ResNet-18 from scratch, 50 epochs):
fused accuracy of Joint training, OGM, AGM, InfoReg and InfoReg*, the video branch of Joint
training and InfoReg, and the Table 4 ablation of InfoReg (whole training, outside the window;
inside the window is InfoReg itself). The paper's other rows (OGM-GE, Greedy, PMR, Joint*,
G-Blending, MMPareto, Table 4's OGM / AGM / PMR schedules) and its Table 1 are not available to
us; the report prints "–" there and says so.
"""

from __future__ import annotations

SOURCE = "../shared/METHOD.md, Published numbers (CREMA-D, ResNet-18, 50 epochs)"

CREMAD_ACC: dict[str, float] = {
    "joint": 66.61,
    "ogm": 68.70,
    "agm": 69.71,
    "inforeg": 71.90,
    "inforeg_star": 75.71,
}
"""Study method key -> the paper's CREMA-D fused accuracy."""

CREMAD_WEAK_BRANCH: dict[str, float] = {"joint": 35.14, "inforeg": 49.65}
"""Study method key -> the paper's CREMA-D video-branch accuracy."""

CREMAD_SCHEDULES: dict[str, dict[str, float]] = {
    "inforeg": {"always": 69.03, "window": 71.90, "outside": 67.22},
}
"""Table 4 row -> schedule (whole training, inside the window, outside) -> CREMA-D accuracy."""
