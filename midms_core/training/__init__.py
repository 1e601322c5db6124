"""Training the correspondence networks on one's own images (``scripts/train_midms.py``, torchrun).

``data`` (training pairs from a folder of photos), ``synthetic`` (known deformations and their
ground truth), ``conditions`` (conditions drawn from a photo), ``losses``, ``vgg`` (the
perceptual loss's network), ``step`` (one step: the batch, the loss terms, the stand-in
latents), ``run_files`` (what a run writes: folded weights, resume state, log, plot) and
``engine`` (the loop, on one process or under torchrun).
"""
