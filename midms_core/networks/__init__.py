"""The paper's learned correspondence networks: ``model`` (the encoders and heads), ``label_maps``
(their condition inputs), ``files`` (safetensors load / save) and ``convert`` (the official
pickled checkpoints -> safetensors).
"""
