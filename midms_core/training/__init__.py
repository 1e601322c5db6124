"""Training the correspondence networks on one's own images (``scripts/train_midms.py``, torchrun).

``data`` (training pairs from a folder of photos), ``synthetic`` (known deformations and their
ground truth), ``conditions`` (conditions drawn from a photo), ``losses``, ``vgg`` (the
perceptual loss's network) and ``engine`` (the loop, its files and its log).
"""
