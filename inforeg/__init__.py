"""InfoReg: adaptive unimodal regulation for balanced multimodal information acquisition.

The library: modality encoders and fusion, the regulators (joint, OGM-GE, InfoReg) as fused
per-modality gradient kernels, information tracking and metrics.
"""

__version__ = "0.1.0"
