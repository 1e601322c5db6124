"""Matchers: where the correspondence features S_x, S_y (paper Eq. 5) and the x0_hat features
S'_x (Eq. 8) come from.

``base`` (the interface and the match data), ``edge`` (training-free edge descriptors),
``diffusion`` (DIFT: a UNet's own features), ``dit`` (DiT features), ``learned`` (the paper's
trained correspondence networks).
"""
