"""Does a gentler alignment stage converge in every seed? Stage 1 alone, judged by its training loss.

    python benchmarks/testbed_align_probe.py --out align_probe.json

Design and criterion: docs/testbed.md, "Alignment probe". For each case (testbed variant, seed) and
each stage-1 setting, trains the llava regime's stage 1 (vision tower and projector against the
frozen cached base, the testbed's own data and seeds) and records its loss curve; nothing is saved
and no model is evaluated. Runs go to parallel single-threaded workers (one per core).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from frankmerge.testbed.trained.build import STAGES, default_cache_dir, stage_paths
from frankmerge.testbed.trained.config import DEFAULT, Stage, TestbedConfig
from frankmerge.testbed.trained.parallel import run_all, usable_cores

if TYPE_CHECKING:  # imported where used: spawned workers stay light
    import torch

    from frankmerge.testbed.trained.encode import Encoder

# The prefix variant of benchmarks/testbed_premise.py.
SYSTEM_PROMPT: tuple[str, ...] = ("the", "assistant", "describe", "a", "image", "the", "a", "cat")
CASES: dict[str, TestbedConfig] = {
    "v2": DEFAULT,
    "prefix": replace(DEFAULT, name="premise-prefix", system_prompt=SYSTEM_PROMPT),
    # docs/testbed.md, "Base probe": v2 with a 3x longer pretraining
    "long": replace(DEFAULT, name="base-3x", base=replace(DEFAULT.base, steps=3 * DEFAULT.base.steps)),
}
DEFAULT_RUNS = (("v2", 1), ("prefix", 1), ("prefix", 2), ("v2", 0))  # three failing, one converging
assert DEFAULT.vlm_align is not None
SETTINGS: dict[str, Stage] = {
    "design (2e-3, warm-up 30)": DEFAULT.vlm_align,
    "a (1e-3, warm-up 100)": replace(DEFAULT.vlm_align, lr=1e-3, warmup=100),
    "b (2e-3, warm-up 200)": replace(DEFAULT.vlm_align, warmup=200),
    # docs/testbed.md, "Alignment probe 2": the design's setting plus the embedding term
    "embedding term (β 1)": replace(DEFAULT.vlm_align, align_embeddings=1.0),
}
CONVERGED = 0.1  # stage-1 loss at step 700 below which a run converged (the design's criterion)


def train_alignment(case: str, seed: int, setting: str, cache_dir: str) -> dict[str, object]:
    """Stage 1 of ``case`` at ``seed`` under ``setting``, exactly as the testbed builds it."""
    from frankmerge.testbed.trained.models import load_model, vlm_from_base
    from frankmerge.testbed.trained.tasks import stage_sampler
    from frankmerge.testbed.trained.train import train_stage

    config = CASES[case].with_seed(seed)
    base = stage_paths(config, Path(cache_dir))["base"]
    if not (base / "config.json").is_file():
        raise SystemExit(f"error: no cached base at {base}; main() builds the bases first")
    stage = SETTINGS[setting]
    stage_seed = config.seed * 1000 + STAGES.index("vlm_align") + 1  # as build._build_stage seeds it
    model = vlm_from_base(load_model(base), config.size, stage_seed)
    sample = stage_sampler("vlm_align", stage.text_mix)
    log = train_stage("vlm_align", model, stage, sample, stage_seed, system=config.system_prompt)
    final = log.losses[-1][1]
    below = next((step for step, loss in log.losses if loss < CONVERGED), None)
    return {
        "case": case,
        "seed": seed,
        "setting": setting,
        "losses": log.losses,
        "final": final,
        "converged": final < CONVERGED,
        "first_step_below": below,  # the first logged step whose LM loss is below the criterion
        "align_losses": log.align_losses,  # the embedding term's curve (empty without it)
    }


def text_form_loss(base: torch.nn.Module, encoder: Encoder, image_scale: int = 1, batches: int = 16, batch: int = 32) -> float:
    """Mean LM loss of the frozen ``base`` on stage-1 data with each image replaced by its patch
    words in order (the 16 scene words at ``image_scale`` 1): what stage 1 can reach if the image
    tokens read like those words."""
    import numpy as np
    import torch

    from frankmerge.testbed.trained.tasks import vlm_data

    rng, losses = np.random.default_rng(12345), []
    with torch.no_grad():
        for _ in range(batches):
            pictured = [vlm_data(rng, image_scale) for _ in range(batch)]
            text = [replace(e, prompt=" ".join(e.cell_words) + " " + e.prompt, image=None) for e in pictured]
            inputs = encoder.batch(text)
            losses.append(float(base(**inputs.model_inputs(), labels=inputs.labels).loss))
    return sum(losses) / len(losses)


def text_ceiling(case: str, seed: int, cache_dir: str, batches: int = 16) -> dict[str, object]:
    """The frozen base's LM loss on the text form of stage-1 data (each image replaced by its text
    scene, the same words in the same cells): what stage 1 can reach if the image tokens read like
    the scene words. A diagnosis added after probe 2's results (docs/testbed.md)."""
    from frankmerge.testbed.trained.encode import Encoder
    from frankmerge.testbed.trained.models import load_model

    config = CASES[case].with_seed(seed)
    base = load_model(stage_paths(config, Path(cache_dir))["base"]).eval()
    loss = text_form_loss(base, Encoder.with_system(config.system_prompt), batches=batches)
    return {"case": case, "seed": seed, "base_text_form_loss": round(loss, 4)}


def _base(case: str, seed: int, cache_dir: str) -> str:
    """Train the case's base for this seed unless it is cached (one job per base, before any stage 1)."""
    import torch

    from frankmerge.testbed.trained.build import ensure_base

    torch.set_num_threads(1)
    return str(ensure_base(CASES[case].with_seed(seed), Path(cache_dir)))


def _case_seed(text: str) -> tuple[str, int]:
    case, _, seed = text.partition(":")
    if case not in CASES or not seed.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected CASE:SEED with CASE one of {', '.join(CASES)}")
    return case, int(seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("align_probe.json"))
    gentler = [name for name in SETTINGS if name[0] in "ab"]
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=gentler, help="default: probe 1's two")
    parser.add_argument(
        "--runs",
        nargs="+",
        type=_case_seed,
        default=list(DEFAULT_RUNS),
        metavar="CASE:SEED",
        help="cases and seeds, e.g. v2:2 prefix:1 [probes 1 and 2's four]",
    )
    parser.add_argument("--workers", type=int, default=usable_cores())
    parser.add_argument("--text-ceiling", action="store_true", help="only the bases' loss on the text form of stage-1 data")
    args = parser.parse_args()
    cache = str(default_cache_dir())
    run_all([(_base, (case, seed, cache)) for case, seed in dict.fromkeys(args.runs)], args.workers)
    if args.text_ceiling:
        rows = run_all([(text_ceiling, (case, seed, cache)) for case, seed in args.runs], args.workers)
        for row in rows:
            print(f"{row['case']:7} seed {row['seed']}: base's loss on stage-1 data as text {row['base_text_form_loss']:.3f}")
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
        return
    jobs = [(train_alignment, (case, seed, setting, cache)) for setting in args.settings for case, seed in args.runs]
    results = run_all(jobs, args.workers)
    for row in results:
        curve = " ".join(f"{loss:.2f}" for step, loss in row["losses"] if step % 100 == 0)  # type: ignore[union-attr]
        label = f"{row['setting']:26} {row['case']:7} seed {row['seed']}"
        term = f"; alignment term at the end {row['align_losses'][-1][1]:.3f}" if row["align_losses"] else ""  # type: ignore[index]
        print(f"{label}: loss every 100 steps {curve}; converged {row['converged']}, first below {row['first_step_below']}{term}")
    for setting in args.settings:
        done = [r for r in results if r["setting"] == setting]
        print(f"{setting}: converges in {sum(bool(r['converged']) for r in done)} of {len(done)} cases")
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
