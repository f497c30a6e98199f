"""ECRS: two-stage e-commerce recommendation serving on Triton."""
