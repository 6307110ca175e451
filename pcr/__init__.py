"""pcr: post-training quantization of text-to-image diffusion models with PCR."""

__version__ = "0.1.0"
