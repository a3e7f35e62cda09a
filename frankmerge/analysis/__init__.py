"""Analyses that feed the merge: the VLM's visual-attention profile and the task-vector statistics.

``profile_vlm`` measures FRANK's per-layer visual-attention ratio a_l and fits its decay α̂ (the
prior's input); ``analyze_task_vectors`` streams the three checkpoints and checks FRANK's
assumptions. Both return values; ``write_profile`` / ``write_analysis`` write them.
"""

from frankmerge.analysis.analysis_report import write_analysis
from frankmerge.analysis.calibration import (
    CalibrationSet,
    bundled_calibration_set,
    image_directory,
    parquet_dataset,
)
from frankmerge.analysis.errors import CalibrationError, ProfileError
from frankmerge.analysis.fit import BootstrapResult, DecayFit, bootstrap_alpha, fit_decay
from frankmerge.analysis.profile import profile_for_merge, profile_vlm
from frankmerge.analysis.profile_report import (
    Profile,
    ProfileOptions,
    check_output_path,
    profile_summary,
    write_profile,
)
from frankmerge.analysis.taskvectors import TaskVectorAnalysis, analyze_task_vectors

__all__ = [
    "BootstrapResult",
    "CalibrationError",
    "CalibrationSet",
    "DecayFit",
    "Profile",
    "ProfileError",
    "ProfileOptions",
    "TaskVectorAnalysis",
    "analyze_task_vectors",
    "bootstrap_alpha",
    "bundled_calibration_set",
    "check_output_path",
    "fit_decay",
    "image_directory",
    "parquet_dataset",
    "profile_for_merge",
    "profile_summary",
    "profile_vlm",
    "write_analysis",
    "write_profile",
]
