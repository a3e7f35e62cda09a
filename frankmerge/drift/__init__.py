"""DRIFT: fine-tune a VLM with a reasoning prior Δ = θ_reasoner − θ_vlm added to its gradients.

``build_prior`` streams Δ into one safetensors file; ``attach_drift`` (or ``DriftCallback`` for
the Hugging Face Trainer) guides a loaded VLM's decoder gradients with it; ``drift_train`` is the
end-to-end SFT runner. See docs/drift.md.
"""

from frankmerge.drift.attach import DriftConfig, DriftHandle, attach_drift, decoder_parameters
from frankmerge.drift.callback import DriftCallback
from frankmerge.drift.coverage import DEFAULT_MODULES, MODULE_GROUPS
from frankmerge.drift.errors import (
    DriftDataError,
    DriftError,
    DriftOptionError,
    DriftSetupError,
    PriorFormatError,
    PriorMismatchError,
)
from frankmerge.drift.guidance import EPS, PLACEMENTS, TIMINGS, VARIANTS, guided_gradient
from frankmerge.drift.prior import PriorOptions, build_prior
from frankmerge.drift.prior_file import DriftPrior, PriorMetadata, load_prior
from frankmerge.drift.train import TrainOptions, TrainResult, drift_train

__all__ = [
    "DEFAULT_MODULES",
    "EPS",
    "MODULE_GROUPS",
    "PLACEMENTS",
    "TIMINGS",
    "VARIANTS",
    "DriftCallback",
    "DriftConfig",
    "DriftDataError",
    "DriftError",
    "DriftHandle",
    "DriftOptionError",
    "DriftPrior",
    "DriftSetupError",
    "PriorFormatError",
    "PriorMetadata",
    "PriorMismatchError",
    "PriorOptions",
    "TrainOptions",
    "TrainResult",
    "attach_drift",
    "build_prior",
    "decoder_parameters",
    "drift_train",
    "guided_gradient",
    "load_prior",
]
