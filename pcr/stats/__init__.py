"""Per-layer activation statistics of a forward pass: streamed (running.py) and recorded by hooks (record.py).

Model-level code, not quantization code: collect, an FP32 stage, records them; observers turn them into ranges.
"""
