"""MIDMs maths in pure torch: correspondence, confidence, matchers and the interleaved sampler.

Importable and testable without ComfyUI; the node pack (``host_adapters/`` and the declarations in
``nodes/``) is a thin layer over it.

This namespace exports what callers combine into a pipeline: the settings, the matchers, the
public (checked) matching, confidence and sampling functions, noise paths, schedules and
inversion. Everything else (the unchecked kernel in ``attention``, building blocks such as
``confidence.smooth_mask``, ``sampler.ddim_step``, the converter's internals) is imported from
its module.
"""

from .alignment import ALIGNMENTS, Alignment, SpatialPrior
from .attention import AttentionSettings
from .cancellation import cancellable
from .confidence import (
    DEFAULT_THRESHOLD_PX,
    WarpResult,
    cycle_distance,
    hard_confidence,
    soft_confidence,
    warp_with_confidence,
)
from .convert import convert_file
from .correspondence import DEFAULT_TAU, attend, centre_normalise, coordinate_grid, soft_argmax_flow, warp
from .diffusion_matcher import DiffusionFeatureMatcher, FeatureCapture
from .edge_matcher import EdgeDescriptorMatcher
from .inversion import bridge, inversion_sigmas, invert_ddim, relative_error
from .learned_matcher import LearnedMatcher
from .matchers import MatchFeatures, MatchSide, Matcher
from .network_files import load_networks, save_networks
from .networks import CorrespondenceConfig, init_networks
from .noise_paths import EPSILON, RECTIFIED_FLOW, GaussianPath
from .pipeline import TranslationResult, translate
from .sampler import WarpSettings, blend, sample_ddim, sample_interleaved
from .schedules import (
    alpha_bar_from_sigma,
    ldm_alphas_cumprod,
    sigma_from_alpha_bar,
    strength_sigmas,
    strength_timesteps,
)

__all__ = [
    "ALIGNMENTS",
    "Alignment",
    "AttentionSettings",
    "CorrespondenceConfig",
    "DEFAULT_TAU",
    "DEFAULT_THRESHOLD_PX",
    "DiffusionFeatureMatcher",
    "EPSILON",
    "EdgeDescriptorMatcher",
    "FeatureCapture",
    "GaussianPath",
    "LearnedMatcher",
    "MatchFeatures",
    "MatchSide",
    "Matcher",
    "RECTIFIED_FLOW",
    "SpatialPrior",
    "TranslationResult",
    "WarpResult",
    "WarpSettings",
    "alpha_bar_from_sigma",
    "attend",
    "blend",
    "bridge",
    "cancellable",
    "centre_normalise",
    "convert_file",
    "coordinate_grid",
    "cycle_distance",
    "hard_confidence",
    "init_networks",
    "inversion_sigmas",
    "invert_ddim",
    "ldm_alphas_cumprod",
    "load_networks",
    "relative_error",
    "sample_ddim",
    "sample_interleaved",
    "save_networks",
    "sigma_from_alpha_bar",
    "soft_argmax_flow",
    "soft_confidence",
    "strength_sigmas",
    "strength_timesteps",
    "translate",
    "warp",
    "warp_with_confidence",
]

__version__ = "0.1.0"
