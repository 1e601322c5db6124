"""Reading a U-Net's features during the host's own model call: an output block patch."""

from __future__ import annotations

import copy

from .cond_batch import record_cond


def block_capture(output_block: int, record):
    """An output_block_patch that passes through and records ``h`` entering ``output_block``.

    In a sampler's batched call (``transformer_options["cond_or_uncond"]`` present) ``h`` holds
    one chunk per entry, in that order; only the cond chunks (0) are recorded, each as its own
    record (the capture averages same-shaped records, e.g. several prompts of one step).
    """

    def patch(h, hsp, transformer_options):
        if transformer_options.get("block") == ("output", output_block):
            record_cond(record, h, transformer_options.get("cond_or_uncond"))
        return h, hsp

    return patch


def with_output_block_patch(model_options: dict, patch) -> dict:
    """A copy of ``model_options`` with ``patch`` appended to the output block patches; the
    dicts and list on the way are copied, so the caller's model_options stay as they were."""
    options = copy.copy(model_options)
    transformer = copy.copy(options.get("transformer_options", {}))
    patches = copy.copy(transformer.get("patches", {}))
    patches["output_block_patch"] = list(patches.get("output_block_patch", [])) + [patch]
    transformer["patches"] = patches
    options["transformer_options"] = transformer
    return options
