"""MIDMs maths in pure torch: correspondence, confidence, matchers and the interleaved sampler.

Importable and testable without ComfyUI; the node pack (``host_adapters/`` and the declarations in
``nodes/``) is a thin layer over it.

This namespace exports what callers combine into a pipeline: the settings, the matchers, the
public (checked) matching, confidence and sampling functions, noise paths, schedules and
inversion. Everything else is imported from its module: the unchecked kernel in ``attention``,
coordinate grids and the soft-argmax in ``correspondence``, building blocks such as the masks
``confidence.hard_confidence`` / ``soft_confidence`` / ``smooth_mask`` and
``sampler.ddim_step``, the converter's internals.
"""

from .alignment import ALIGNMENTS, Alignment, SpatialPrior
from .attention import AttentionSettings
from .confidence import DEFAULT_THRESHOLD_PX, ConfidenceSettings, WarpResult, cycle_distance, warp_with_confidence
from .correspondence import DEFAULT_TAU, warp
from .inversion import bridge, inversion_sigmas, invert_ddim
from .matchers.base import Matcher, MatchFeatures, MatchSide
from .matchers.diffusion import DiffusionFeatureMatcher, DiffusionMatcherSettings, FeatureCapture
from .matchers.edge import EdgeDescriptorMatcher, EdgeMatcherSettings
from .matchers.learned import LearnedMatcher
from .networks.files import load_networks, save_networks
from .networks.model import CorrespondenceConfig, init_networks
from .noise_paths import EPSILON, RECTIFIED_FLOW, GaussianPath
from .pipeline import TranslationResult, translate
from .sampler import WarpSettings, blend, sample_ddim, sample_interleaved
from .schedules import strength_sigmas, strength_timesteps

__all__ = [
    "ALIGNMENTS",
    "Alignment",
    "AttentionSettings",
    "ConfidenceSettings",
    "CorrespondenceConfig",
    "DEFAULT_TAU",
    "DEFAULT_THRESHOLD_PX",
    "DiffusionFeatureMatcher",
    "DiffusionMatcherSettings",
    "EPSILON",
    "EdgeDescriptorMatcher",
    "EdgeMatcherSettings",
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
    "blend",
    "bridge",
    "cycle_distance",
    "init_networks",
    "inversion_sigmas",
    "invert_ddim",
    "load_networks",
    "sample_ddim",
    "sample_interleaved",
    "save_networks",
    "strength_sigmas",
    "strength_timesteps",
    "translate",
    "warp",
    "warp_with_confidence",
]

__version__ = "0.1.0"
