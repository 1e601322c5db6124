"""Code that talks to ComfyUI's internals on behalf of the nodes.

Imports ``comfy.*`` and the host's top-level modules, and ``..midms_core``; never ``..nodes``
(the declarations import this package, not the other way round).

    node_names          every node's display name (the nodes declare them, errors here name nodes with them)
    errors              NodeInputError (the error a node reports)
    devices             the host's compute / output device, its cache, its interrupt button
    noise_paths         a host model's sampling (read from its ModelPatcher) and noise path (epsilon / v or rectified flow)
    latent_spaces       a model's latent channels, and the check where latents meet a model
    schedules           a host model's sigmas, the schedule the host's BasicScheduler gives
    match               what flows between the nodes (context, settings, match); binding a match
    encode              condition + exemplar images -> a context, through the host's VAE
    previews            the first warp with its confidence and previews, as host outputs
    host_matcher        HostMatcher: the two hooks host-side code calls on a matcher
    learned_matcher     the learned networks from models/midms, under the host's model management
    diffusion_matcher   DIFT / DiTF features from the host's own model
    unet_capture        reading a U-Net output block during the host's model call
    dit_capture         reading a Flux / SD3 block during the host's model call
    cond_batch          which rows of the host's batched call are the cond rows
    text_conditioning   the empty prompt and a model's text widths
    interleaved_sampler the MIDMs sampler as a KSAMPLER, and the all-in-one run
    inversion_sampler   DDIM inversion as a KSAMPLER
    bridge              DDIB: invert with one model, regenerate with another
"""

from .bridge import run_bridge
from .devices import compute_device, empty_cache, interruptible, output_device
from .diffusion_matcher import HostDiffusionMatcher
from .errors import NodeInputError
from .host_matcher import CaptureHook, HostMatcher, as_host_matcher
from .interleaved_sampler import START_MODES, midms_sampler, sample_all_in_one
from .inversion_sampler import inversion_sampler
from .learned_matcher import HostLearnedMatcher
from .match import MIDMsContext, MIDMsMatch, MIDMsSettings, bind, initial_warp
from .node_names import DIFFUSION_MATCHER
from .noise_paths import noise_path

__all__ = [
    "DIFFUSION_MATCHER", "START_MODES", "CaptureHook", "HostDiffusionMatcher", "HostLearnedMatcher", "HostMatcher",
    "MIDMsContext", "MIDMsMatch", "MIDMsSettings", "NodeInputError", "as_host_matcher", "bind", "compute_device",
    "empty_cache", "initial_warp", "interruptible", "inversion_sampler", "midms_sampler", "noise_path", "output_device",
    "run_bridge", "sample_all_in_one",
]
