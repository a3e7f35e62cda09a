"""``frankmerge profile`` and ``frankmerge analyze``: parse, call frankmerge.analysis, print."""

from __future__ import annotations

from pathlib import Path

import click

from frankmerge.errors import RecipeError


@click.command()
@click.option("--vlm", required=True, help="Vision-language model: local directory or hub id (org/name[@revision]).")
@click.option("--images", type=click.Path(path_type=Path), help="Directory of calibration images [default: the bundled set].")
@click.option("--dataset", type=click.Path(path_type=Path), help="Parquet file (or directory of them) with an image column.")
@click.option("--image-column", help="Image column of --dataset [default: the first binary / {bytes} column].")
@click.option("--num-images", type=int, help="Use a seeded random subset of this many images.")
@click.option("--prompt", default="Describe this image in detail.", show_default=True, help="Text after the image.")
@click.option(
    "--query",
    type=click.Choice(["after_image", "last", "generated"]),
    default="after_image",
    show_default=True,
    help="Which text tokens are the queries: all prompt tokens after the image, the last prompt token, or generated tokens.",
)
@click.option(
    "--exclude-sink/--keep-sink", default=False, show_default=True, help="Drop key position 0 (attention sink) from a_l."
)
@click.option(
    "--max-new-tokens", type=int, default=16, show_default=True, help="Generated query tokens per image (--query generated)."
)
@click.option("--device", default="auto", show_default=True, help="auto (device_map=auto on CUDA, else CPU), cpu, cuda, cuda:N.")
@click.option("--dtype", type=click.Choice(["auto", "bfloat16", "float16", "float32"]), default="auto", show_default=True)
@click.option("--bootstrap", "n_boot", type=int, default=1000, show_default=True, help="Bootstrap draws over images.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("profile.json"), show_default=True, help="Profile JSON (plot: .png)."
)
@click.option("--no-plot", is_flag=True, help="Do not write the PNG plot.")
@click.option("--download", "allow_download", is_flag=True, help="Download a hub id missing from the cache.")
@click.option(
    "--trust-remote-code",
    is_flag=True,
    help=(
        "Allow running a checkpoint's own code; not needed for InternVL2.5/InternVL2 chat checkpoints, "
        "which run through transformers' own InternVL."
    ),
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def profile(
    vlm: str,
    images: Path | None,
    dataset: Path | None,
    image_column: str | None,
    num_images: int | None,
    out: Path,
    no_plot: bool,
    allow_download: bool,
    quiet: bool,
    **options: object,
) -> None:
    """Measure the VLM's per-layer visual-attention ratio a_l and fit ln a_l = ln C − α l.

    \b
    frankmerge profile --vlm Qwen/Qwen2.5-VL-7B-Instruct --out profile.json
    frankmerge merge ... --profile profile.json
    """
    from frankmerge.analysis import (
        ProfileOptions,
        bundled_calibration_set,
        check_output_path,
        image_directory,
        parquet_dataset,
        profile_vlm,
        write_profile,
    )

    if images is not None and dataset is not None:
        raise RecipeError("choose one image source: --images DIR or --dataset FILE")
    check_output_path(out)
    if images is not None:
        source = image_directory(images)
    elif dataset is not None:
        source = parquet_dataset(dataset, image_column)
    else:
        source = bundled_calibration_set()
    result = profile_vlm(
        vlm,
        source,
        ProfileOptions(max_images=num_images, **options),  # type: ignore[arg-type]
        allow_download=allow_download,
        progress=not quiet,
    )
    written = write_profile(result, out, plot=not no_plot)
    if quiet:
        return
    fit, boot = result.fit, result.bootstrap
    click.echo(f"{'layer':>5} {'a_mean':>8} {'a_std':>8} {'a_fit':>8}")
    for row in result.to_json()["layers"]:
        click.echo(f"{row['layer']:>5} {row['a_mean']:>8.4f} {row['a_std'] or 0:>8.4f} {row['a_fit']:>8.4f}")
    r2 = "n/a" if fit.r2 is None else f"{fit.r2:.3f}"
    click.echo(f"alpha = {fit.alpha:.5g}  C = {fit.C:.4g}  R^2 = {r2}  ({len(result.images)} images, query={options['query']})")
    click.echo(f"bootstrap: std(alpha) = {boot.alpha_std:.3g}, 95% CI [{boot.ci95[0]:.4g}, {boot.ci95[1]:.4g}]")
    if boot.recommended_images is not None:
        how = "measured" if boot.recommended_from == "measured" else "extrapolated"
        click.echo(f"images needed for a stable alpha (std <= {boot.tolerance:.2g}): {boot.recommended_images} ({how})")
    click.echo("wrote " + ", ".join(str(p) for p in written))


@click.command()
@click.option("--vlm", required=True, help="Vision-language model.")
@click.option("--reasoner", required=True, help="Reasoning LLM fine-tuned from the VLM's base LLM.")
@click.option("--base", required=True, help="The base LLM both were fine-tuned from.")
@click.option("--reasoner-base", help="The reasoner's own base, when it is not --base: τ_R = θ_R − θ_reasoner_base.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output directory.")
@click.option("--alpha", type=float, help="α for the Eq. 16 λ_V column and warning [default: 0, i.e. w_V = 1/L].")
@click.option("--profile", "profile_path", type=click.Path(path_type=Path, dir_okay=False), help="Take α̂ from a profile JSON.")
@click.option("--allow-pickle", is_flag=True, help="Load pickled .bin weights (weights_only=True).")
@click.option("--allow-family-mismatch", is_flag=True, help="Compare decoders of different families.")
@click.option("--download", "allow_download", is_flag=True, help="Download hub ids missing from the cache.")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="Threads that compute [every core this process may run on]; the statistics are the same for any count.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or table (warnings are still printed).")
def analyze(
    vlm: str,
    reasoner: str,
    base: str,
    reasoner_base: str | None,
    out: Path,
    alpha: float | None,
    profile_path: Path | None,
    allow_pickle: bool,
    allow_family_mismatch: bool,
    allow_download: bool,
    threads: int | None,
    quiet: bool,
) -> None:
    """Task-vector statistics per block and module type, and warnings where FRANK's assumptions fail.

    Writes OUT/analysis.json, analysis.csv, fig3_cosine.png and norms.png.
    """
    from frankmerge.analysis import analyze_task_vectors, write_analysis
    from frankmerge.recipe import prior_from_profile

    if alpha is not None and profile_path is not None:
        raise RecipeError("choose one of --alpha and --profile")
    if out.exists() and not out.is_dir():
        raise RecipeError(f"--out {out}: is a file; pass a directory")
    profile_layers, source = None, None
    if profile_path is not None:
        prior = prior_from_profile(profile_path)
        alpha, profile_layers, source = prior.alpha, prior.profile_layers, f"from profile {profile_path}"
    result = analyze_task_vectors(
        vlm,
        reasoner,
        base,
        alpha=alpha,
        alpha_source=source,
        profile_layers=profile_layers,
        allow_pickle=allow_pickle,
        allow_download=allow_download,
        allow_family_mismatch=allow_family_mismatch,
        progress=not quiet,
        reasoner_base=reasoner_base,
        threads=threads,
    )
    written = write_analysis(result, out)
    if not quiet:
        click.echo(
            f"{'layer':>5} {'|tau_V|':>10} {'|tau_R|':>10} {'cos':>7} {'conflict':>8} {'|dV-R|/|0|':>10} "
            f"{'lamV_13':>8} {'lamV_16':>8}"
        )
        for b in result.blocks:
            click.echo(
                f"{b.layer:>5} {b.norm_v:>10.4g} {b.norm_r:>10.4g} {b.cos_vr:>+7.3f} {b.sign_conflict:>8.3f} "
                f"{b.rel_dist_vr:>10.3g} {result.lambda_v_eq13[b.index]:>8.4f} {result.lambda_v_eq16[b.index]:>8.4f}"
            )
        click.echo("wrote " + ", ".join(str(p) for p in written))
    for _, message in result.warnings:
        click.echo(f"warning: {message}", err=True)


COMMANDS = [profile, analyze]
