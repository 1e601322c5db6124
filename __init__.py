"""ComfyUI entry point of the MIDMs node pack (ComfyUI imports this folder as a package).

Outside ComfyUI (test runners import the folder as a package too) the host module
``folder_paths`` is absent: then the pack exposes no nodes and imports nothing from the host.
"""

import os

try:
    import folder_paths
except ModuleNotFoundError as err:  # not inside ComfyUI
    if err.name != "folder_paths":
        raise
    folder_paths = None

WEB_DIRECTORY = "./web/js"  # front-end extension: the round-trip error shown on its node

if folder_paths is None:
    NODE_CLASS_MAPPINGS = {}
    NODE_DISPLAY_NAME_MAPPINGS = {}
else:
    # models/midms holds converted correspondence networks (.safetensors only)
    _midms_dir = os.path.join(folder_paths.models_dir, "midms")
    if "midms" in folder_paths.folder_names_and_paths:
        _paths, _exts = folder_paths.folder_names_and_paths["midms"]
        if _midms_dir not in _paths:
            _paths.append(_midms_dir)
        folder_paths.folder_names_and_paths["midms"] = (_paths, set(_exts) | {".safetensors"})
    else:
        folder_paths.folder_names_and_paths["midms"] = ([_midms_dir], {".safetensors"})

    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
