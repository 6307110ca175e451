from quant_testlib import qcfg, unet  # noqa: F401  (fixtures)
