"""MIDMs maths in pure torch: correspondence, confidence, matchers and the interleaved sampler.

Importable and testable without ComfyUI; the node pack in ``nodes/`` is a thin layer over it.
"""

from .alignment import ALIGNMENTS, Alignment, SpatialPrior, affine_targets, search_similarity
from .attention import AttentionSettings, GridLocality
from .cancellation import cancellable, checkpoint
from .noise_paths import EPSILON, RECTIFIED_FLOW, GaussianPath
from .confidence import (
    DEFAULT_THRESHOLD_PX,
    WarpResult,
    cycle_distance,
    hard_confidence,
    normalised_to_pixels,
    sample_bilinear,
    smooth_mask,
    soft_confidence,
    warp_with_confidence,
)
from .convert import (
    ConversionReport,
    convert_file,
    convert_official_state_dict,
    fold_spectral_norm,
    load_official_checkpoint,
)
from .correspondence import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_TAU,
    attend,
    attend_dense,
    centre_normalise,
    coordinate_grid,
    soft_argmax_flow,
    warp,
)
from .diffusion_matcher import DiffusionFeatureMatcher, FeatureCapture
from .edge_matcher import (
    EdgeDescriptorMatcher,
    condition_edge_map,
    exemplar_edge_map,
    orientation_histograms,
    ring_descriptor,
)
from .inversion import bridge, invert_ddim, inversion_sigmas, relative_error
from .label_maps import canny_edge_map, to_label_channels
from .learned_matcher import LearnedMatcher
from .matchers import Matcher, MatchFeatures, MatchSide
from .network_files import config_from_state_dict, load_networks, save_networks
from .networks import CorrespondenceConfig, CorrespondenceNetworks, init_networks, positional_norm
from .pipeline import TranslationResult, translate
from .sampler import (
    WarpSettings,
    blend,
    ddim_step,
    default_noise_sampler,
    noise_latent,
    rewarp_transform,
    sample_ddim,
    sample_interleaved,
)
from .schedules import (
    alpha_bar_from_sigma,
    ldm_alphas_cumprod,
    sigma_from_alpha_bar,
    strength_sigmas,
    strength_timesteps,
)

__version__ = "0.1.0"
