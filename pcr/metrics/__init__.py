"""QDiffBench metrics: FID/KID with pluggable features, per-image PSNR/SSIM, CLIP score.

Import the submodules directly (`pcr.metrics.qdiffbench`, ...): they pull in torchmetrics and
transformers, which this package root leaves unimported.
"""
