"""Activation calibration: the progressive sweep, the fp32 and shared baselines, and the naive loop."""
