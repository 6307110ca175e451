"""Weight quantization methods: round to nearest (rtn.py) and AdaRound reconstruction (adaround.py, reconstruct.py).

Every method returns per layer a `WeightCodes` (codes.py): integer codes plus per-output-channel scale and
zero point; the `weights` stage (run.py) writes them to weights.safetensors for calibrate and export.
"""
