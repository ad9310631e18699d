"""The `mlsrv` command line. Must stay TensorFlow-free at import time (completion re-runs it on every TAB)."""
