"""The attention profile as a value, its JSON form, and writing it (JSON + plot) atomically.

The JSON keeps the contract ``frankmerge merge --profile`` reads: top-level ``num_layers`` and
``fit.alpha`` (``fit.C`` for the ``fitted`` prior). Every choice the paper leaves open is recorded
under ``method`` so that two profiles can be compared knowingly.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from frankmerge import __version__
from frankmerge.analysis.errors import ProfileError
from frankmerge.analysis.files import commit_files, json_safe
from frankmerge.analysis.fit import BootstrapResult, DecayFit
from frankmerge.errors import one_line

PROFILE_FORMAT = "frankmerge-profile"
PROFILE_VERSION = 1
PERCENTILES = (5, 25, 50, 75, 95)

QUERY_DESCRIPTIONS = {
    "after_image": "every prompt token after the last image token: the user's text plus the chat template's "
    "closing and generation-prompt tokens",
    "last": "the last prompt token only (the position that predicts the first answer token)",
    "generated": "the first max_new_tokens tokens of a greedy answer, each attending to the prompt and the earlier "
    "answer tokens (EOS and the image token are suppressed so that every image yields the same count)",
}
AGGREGATION = (
    "per image, layer and query head: Attn_vis = attention mass the query rows put on visual key positions, "
    "Attn_text = mass on the other key positions; a = Attn_vis / (Attn_vis + Attn_text) per head, averaged over "
    "all query heads (GQA key/value heads are shared as the model shares them), then over images"
)
VISUAL_KEYS = (
    "key positions whose input id equals the config's image-token id (image_token_id / image_token_index); "
    "wrapper tokens such as vision-start/end, boi/eoi or tile markers count as text"
)


CHAT_TEMPLATES = {
    "native": "the VLM's own (processor.apply_chat_template, one image then the prompt)",
    "internvl_chat": (
        "InternVL's internvl2_5 template as its chat() builds it (<img> + <IMG_CONTEXT> per visual token + </img>, "
        "then the prompt), one 448-px tile per image, run by transformers' InternVLForConditionalGeneration "
        "with the checkpoint's weights (its own code never ran)"
    ),
}


@dataclass(frozen=True)
class ModelInfo:
    reference: str
    path: str
    model_type: str
    text_model_type: str
    num_layers: int
    num_heads: int
    image_token_id: int


@dataclass(frozen=True)
class ProfileOptions:
    """The choices the paper left open, plus how to run the model."""

    prompt: str = "Describe this image in detail."
    query: str = "after_image"  # after_image | last | generated
    exclude_sink: bool = False  # drop key position 0 (the attention sink) from both masses
    max_new_tokens: int = 16  # query rows per image for query="generated"
    max_images: int | None = None  # seeded random subset of the source
    device: str = "auto"  # auto | cpu | cuda | cuda:N (auto: device_map="auto" when CUDA is available)
    dtype: str = "auto"  # auto (the checkpoint's) | bfloat16 | float16 | float32
    n_boot: int = 1000
    seed: int = 0
    trust_remote_code: bool = False  # only profile runs a model; merge and analyze never need this


@dataclass(frozen=True)
class ImageRecord:
    name: str
    visual_tokens: int
    query_rows: int
    sequence_length: int
    seconds: float


@dataclass(frozen=True)
class Profile:
    model: ModelInfo
    options: ProfileOptions
    source_kind: str
    source: str
    skipped: tuple[str, ...]
    images: tuple[ImageRecord, ...]
    per_image: np.ndarray  # (images, layers): a_l of each image
    fit: DecayFit
    bootstrap: BootstrapResult
    device: str
    dtype: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return self.model.num_layers

    @property
    def ratios(self) -> np.ndarray:
        """Mean a_l over images, l = 1..L."""
        return self.per_image.mean(axis=0)

    def to_json(self) -> dict[str, Any]:
        per_image = self.per_image
        spread = np.percentile(per_image, PERCENTILES, axis=0)
        std = per_image.std(axis=0, ddof=1) if per_image.shape[0] > 1 else np.zeros(per_image.shape[1])
        layers = [
            {
                "layer": l + 1,
                "a_mean": float(per_image[:, l].mean()),
                "a_std": float(std[l]),
                "a_min": float(per_image[:, l].min()),
                "a_max": float(per_image[:, l].max()),
                **{f"a_p{p:02d}": float(spread[i, l]) for i, p in enumerate(PERCENTILES)},
                "a_fit": float(self.fit.curve(np.array([l + 1.0]))[0]),
            }
            for l in range(self.num_layers)
        ]
        boot = self.bootstrap
        data = {
            "format": PROFILE_FORMAT,
            "format_version": PROFILE_VERSION,
            "tool": f"frankmerge {__version__}",
            "model": asdict(self.model),
            "num_layers": self.num_layers,
            "image_token_id": self.model.image_token_id,
            "method": {
                "equation": "a_l = mean over images and heads of Attn_vis / (Attn_vis + Attn_text) (FRANK Eq. 39)",
                "query": self.options.query,
                "query_description": QUERY_DESCRIPTIONS[self.options.query],
                "max_new_tokens": self.options.max_new_tokens if self.options.query == "generated" else None,
                "exclude_sink": self.options.exclude_sink,
                "sink": "key position 0 excluded from both masses" if self.options.exclude_sink else "key position 0 counted",
                "heads": "mean over all query heads",
                "aggregation": AGGREGATION,
                "visual_keys": VISUAL_KEYS,
                "prompt": self.options.prompt,
                "chat_template": CHAT_TEMPLATES.get(self.model.model_type, CHAT_TEMPLATES["native"]),
                "layer_index": "l = 1..L, 1-based as in Eq. 16",
            },
            "images": {
                "kind": self.source_kind,
                "source": self.source,
                "count": len(self.images),
                "skipped_unreadable": list(self.skipped),
                "subset_seed": self.options.seed if self.options.max_images is not None else None,
                "mean_visual_tokens": float(np.mean([r.visual_tokens for r in self.images])),
                "mean_query_rows": float(np.mean([r.query_rows for r in self.images])),
                "mean_sequence_length": float(np.mean([r.sequence_length for r in self.images])),
                "names": [r.name for r in self.images],
            },
            "layers": layers,
            "fit": {
                "alpha": self.fit.alpha,
                "C": self.fit.C,
                "ln_C": math.log(self.fit.C),
                "r2": self.fit.r2,
                "model": "ln a_l = ln C − α l, ordinary least squares over l = 1..L of ln(mean a_l) (Eq. 41–44)",
            },
            "bootstrap": {
                "n_boot": boot.n_boot,
                "seed": boot.seed,
                "alpha_mean": boot.alpha_mean,
                "alpha_std": boot.alpha_std,
                "ci95": list(boot.ci95),
                "by_size": [
                    {"n_images": s.n_images, "n_boot": s.n_boot, "alpha_std": s.alpha_std, "ci95": list(s.ci95)}
                    for s in boot.by_size
                ],
                "tolerance": boot.tolerance,
                "recommended_images": boot.recommended_images,
                "recommended_from": boot.recommended_from,
                "criterion": "fewest images whose bootstrap std(α̂) · (L − 1) ≤ 0.1, i.e. the prior's first-to-last "
                "layer ratio e^{−α(L−1)} moves by at most ~10 %; beyond the images measured, extrapolated with "
                "std ∝ 1/√n",
            },
            "per_image": [[float(v) for v in row] for row in per_image],
            "device": self.device,
            "dtype": self.dtype,
            "attn_implementation": "frankmerge_probe (SDPA for the layer output, float32 softmax of the query rows)",
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }
        return json_safe(data)


def check_output_path(out: Path) -> Path:
    """Refuse an output path that cannot be written, before any profiling time is spent."""
    out = Path(out)
    if out.is_dir():
        raise ProfileError(f"--out {out}: is a directory; pass a file name such as profile.json")
    if not out.parent.is_dir():
        raise ProfileError(f"--out {out}: directory {out.parent} does not exist")
    return out


def write_profile(profile: Profile, out: Path, *, plot: bool = True) -> list[Path]:
    """Write ``out`` (JSON) and, with ``plot``, ``out`` with suffix .png; both appear only once complete."""
    out = check_output_path(out)
    files: dict[Path, bytes] = {out: (json.dumps(profile.to_json(), indent=2, ensure_ascii=False) + "\n").encode()}
    if plot:
        from frankmerge.analysis.plots import profile_png

        files[out.with_suffix(".png")] = profile_png(profile)
    commit_files(files)
    return list(files)


def profile_summary(path: Path) -> dict[str, Any]:
    """The few facts of a profile JSON that a merge report should record (what α̂ came from)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ProfileError(f"--profile {path}: unreadable ({one_line(exc)})") from exc
    method, images, fit = data.get("method", {}), data.get("images", {}), data.get("fit", {})
    boot = data.get("bootstrap", {})
    return {
        "path": str(path),
        "model": data.get("model", {}).get("path"),
        "num_layers": data.get("num_layers"),
        "alpha": fit.get("alpha", data.get("alpha")),
        "C": fit.get("C"),
        "r2": fit.get("r2"),
        "alpha_std": boot.get("alpha_std"),
        "alpha_ci95": boot.get("ci95"),
        "images": {"kind": images.get("kind"), "source": images.get("source"), "count": images.get("count")},
        "query": method.get("query"),
        "exclude_sink": method.get("exclude_sink"),
        "prompt": method.get("prompt"),
    }
