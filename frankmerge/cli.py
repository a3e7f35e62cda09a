"""Command line: parse, build a recipe, call the API, print. No merge logic lives here."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from frankmerge import __version__
from frankmerge.errors import FrankmergeError, RecipeError, one_line
from frankmerge.layouts.families import FAMILIES
from frankmerge.methods.parameters import METHOD_PARAMETERS
from frankmerge.progress import quiet_library_bars

if TYPE_CHECKING:
    from frankmerge.recipe import Prior

EXIT_BAD_INPUT = 1


# Commands that only read and write files (no training loop, no inference engine) may end the
# process without the interpreter's teardown: unloading torch alone takes ~0.8 s, a tenth of a
# 1.5B merge. Everything they write is closed before they return.
# drift-train is one of them for a second reason: under torchrun / accelerate a rank could still abort
# in C++ static destructors at interpreter exit ("terminate called without an active exception",
# SIGABRT, about 1 run in 5 of tests/drift/test_fsdp_train.py) after its files were written and the
# process group was left; its files are closed and it reports to no tracker, so nothing needs teardown.
FAST_EXIT_COMMANDS = frozenset(
    {"analyze", "benchmarks", "check", "compare", "drift-prior", "drift-train", "layouts", "merge", "profile", "score", "tokens"}
)
_invoked: list[str] = []  # the subcommand this process ran (read by entry_point)


def _is_validation_error(exc: Exception) -> bool:
    """pydantic's ValidationError, recognised without importing pydantic (``--help`` stays light)."""
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(exc, pydantic.ValidationError)


class _Group(click.Group):
    """Turn every FrankmergeError into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        if ctx.invoked_subcommand is not None:
            _invoked.append(ctx.invoked_subcommand)
        try:
            return super().invoke(ctx)
        except FrankmergeError as exc:
            click.echo(f"error: {one_line(exc)}", err=True)  # one line even when a message quotes a library's
            sys.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            click.echo("error: interrupted; nothing was written to the output", err=True)
            sys.exit(130)
        except BrokenPipeError:  # `frankmerge layouts | head`: the reader left; stop quietly, as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except click.UsageError as exc:  # a bad option value or a missing option: one line too
            where = exc.ctx.command_path if exc.ctx is not None else "frankmerge"
            click.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise  # --help, --version: click reports them itself
        except Exception as exc:
            if _is_validation_error(exc):  # a pydantic model built from options outside build_recipe
                from frankmerge.recipe import describe_validation_error

                click.echo(f"error: {describe_validation_error(exc)}", err=True)  # type: ignore[arg-type]
                sys.exit(EXIT_BAD_INPUT)
            if logging.getLogger().isEnabledFor(logging.INFO):
                raise
            click.echo(f"error: unexpected {type(exc).__name__}: {one_line(exc)} (rerun with -v for the traceback)", err=True)
            sys.exit(EXIT_BAD_INPUT)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="frankmerge")
@click.option("-v", "--verbose", is_flag=True, help="Log what each step does.")
def main(verbose: bool) -> None:
    """Merge a vision-language model's language decoder with a reasoning LLM (FRANK)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_library_bars()


@main.command()
@click.argument("recipe_file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--vlm", help="Vision-language model: local directory or hub id (org/name[@revision]).")
@click.option("--reasoner", help="Reasoning LLM fine-tuned from the VLM's base LLM.")
@click.option("--base", help="The base LLM both were fine-tuned from (the VLM's base).")
@click.option(
    "--reasoner-base",
    help="The reasoner's own base when it is not --base (R1-Distill-Qwen-7B: Qwen2.5-Math-7B); τ_R is taken over it.",
)
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False), help="Output directory.")
@click.option(
    "--method",
    type=click.Choice(list(METHOD_PARAMETERS)),
    help="Merge method [frank]; the baselines use their published defaults unless overridden below.",
)
@click.option("--alpha", type=float, help="Exponential prior (Eq. 16) with this decay rate α.")
@click.option(
    "--profile", type=click.Path(path_type=Path, dir_okay=False), help="Exponential prior with the α̂ of a profile JSON."
)
@click.option("--no-prior", is_flag=True, help="FRANK without prior (Eq. 13).")
@click.option(
    "--prior",
    "prior_kind",
    type=click.Choice(["linear", "relative", "minmax", "fitted"]),
    help="Other prior schedules: linear (ablation); relative, minmax, fitted (need α: see docs/profiling.md).",
)
@click.option("--dtype", type=click.Choice(["auto", "bfloat16", "float16", "float32"]), help="Output dtype [auto: the VLM's].")
@click.option(
    "--embeddings",
    type=click.Choice(["keep_vlm", "merge_shared"]),
    help="Embeddings, final norm, lm_head: keep the VLM's [default], or merge the rows both vocabularies share.",
)
@click.option("--beta", help="linear / layer_swap: VLM weight β [0.9]; one value or a per-layer comma list.")
@click.option("--lambda-v", help="task_arithmetic: λ_V [0.3]; one value or a per-layer comma list.")
@click.option("--lambda-r", help="task_arithmetic: λ_R [0.7]; one value or a per-layer comma list.")
@click.option("--weights", help="ties / dare_*: 'w_V,w_R' [ties 1.6,0.2; dare_linear 0.9,0.1].")
@click.option("--density", type=float, help="ties: fraction of each task vector kept, in (0, 1] [0.2].")
@click.option("--drop-rate", type=float, help="dare_*: drop probability p, in (0, 1) [0.5].")
@click.option("--scale", type=float, help="ties / dare_ties: λ applied to the merged delta [1.0].")
@click.option("--seed", type=int, help="dare_*: random seed [0].")
@click.option("--swap-k", "k", type=int, help="layer_swap: blocks kept from the VLM [5].")
@click.option("--mergekit-compat", is_flag=True, default=None, help="ties / dare_*: mergekit's variants instead of the papers'.")
@click.option(
    "--think-template", is_flag=True, default=None, help="Chat template opens the assistant turn with <think>\\n (R1 style)."
)
@click.option(
    "--generation-config",
    type=click.Choice(["reasoning", "vlm"]),
    help="reasoning [default]: sampling at T 0.6, top-p 0.95, max_new_tokens 8192; vlm: keep the VLM's.",
)
@click.option("--reasoning-tokens", help="Reasoner tokens to carry over by text [<think>,</think>].")
@click.option(
    "--no-carry-reasoning-tokens",
    "carry_reasoning_tokens",
    flag_value=False,
    default=None,
    help="Do not add the reasoner's tokens.",
)
@click.option("--max-shard-size", help="Output shard size, e.g. 5GB [default].")
@click.option("--vlm-layout", help="Override the detected layout table of the VLM (see `frankmerge layouts`).")
@click.option("--reasoner-layout", help="Override the reasoner's layout table.")
@click.option("--base-layout", help="Override the base model's layout table.")
@click.option("--reasoner-base-layout", help="Override the reasoner base's layout table.")
@click.option("--allow-pickle", is_flag=True, default=None, help="Load pickled .bin weights (weights_only=True).")
@click.option("--allow-nonfinite", is_flag=True, default=None, help="Do not stop on NaN/Inf in the inputs.")
@click.option("--allow-family-mismatch", is_flag=True, default=None, help="Merge decoders of different families.")
@click.option("--download", "allow_download", is_flag=True, default=None, help="Download hub ids missing from the cache.")
@click.option(
    "--strict", is_flag=True, default=None, help="Refuse the merge when a config field that changes the function differs."
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="Threads that compute [every core this process may run on]; the result is the same for any count.",
)
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output directory.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def merge(recipe_file: Path | None, out: Path, overwrite: bool, quiet: bool, threads: int | None, **options: Any) -> None:
    """Merge a VLM with a reasoning LLM, block by block, into OUT.

    \b
    Either give the three models and a prior:
      frankmerge merge --vlm VLM --reasoner R1 --base BASE --out merged --alpha 0.1
    or a recipe (YAML; flags given on the command line override its keys):
      frankmerge merge recipe.yaml --out merged

    The prior: --alpha A (Eq. 16), --profile profile.json (α̂ measured by `frankmerge profile`),
    --no-prior (Eq. 13), --prior linear, or --prior relative|minmax|fitted with --alpha/--profile.
    With no prior option, the VLM is profiled on the bundled calibration images first.
    """
    from frankmerge.merge import merge as run_merge

    recipe = _recipe_from(recipe_file, options)
    if recipe.method == "frank" and recipe.prior is None:
        click.echo(
            "no prior option given: profiling the VLM on the bundled calibration images first "
            "(pass --alpha, --profile or --no-prior to skip this)",
            err=True,
        )
    with _sigterm_as_interrupt():  # `kill`, `timeout`, a scheduler: clean up as after Ctrl-C
        result = run_merge(recipe, out, overwrite=overwrite, progress=not quiet, threads=threads)
    if not quiet:
        _print_summary(result)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, so the merge removes its partial output before exiting (130)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _recipe_from(recipe_file: Path | None, options: dict[str, Any]):  # type: ignore[no-untyped-def]
    from frankmerge.recipe import build_recipe, load_recipe

    prior = _prior_from_options(*(options.pop(k) for k in ("alpha", "profile", "no_prior", "prior_kind")))
    data: dict[str, Any] = {}
    if recipe_file is not None:
        data = load_recipe(recipe_file).model_dump(exclude_unset=True)
    parameters = {key: options.pop(key) for key in PARAMETER_OPTIONS}
    parameters = {key: _parse_parameter(key, value) for key, value in parameters.items() if value is not None}
    if parameters:
        data["parameters"] = {**data.get("parameters", {}), **parameters}
    if options.get("reasoning_tokens") is not None:
        options["reasoning_tokens"] = [t.strip() for t in options["reasoning_tokens"].split(",") if t.strip()]
    layouts = {role: options.pop(f"{role}_layout") for role in ("vlm", "reasoner", "base", "reasoner_base")}
    if any(layouts.values()):
        data["layouts"] = {**data.get("layouts", {}), **{k: v for k, v in layouts.items() if v}}
    data.update({key: value for key, value in options.items() if value is not None})
    for role in ("vlm", "reasoner", "base"):
        if role not in data:
            raise RecipeError(f"missing --{role} (or a recipe file that sets `{role}:`)")
    if prior is not None:
        data["prior"] = prior
    return build_recipe(data, source=str(recipe_file) if recipe_file else "options")


def _prior_from_options(alpha: float | None, profile: Path | None, no_prior: bool, kind: str | None) -> Prior | None:
    """--alpha / --profile give α (and Ĉ); --prior picks the schedule that uses them; --no-prior is Eq. 13."""
    from frankmerge.recipe import Prior, prior_from_profile

    if no_prior and (alpha is not None or profile or kind):
        raise RecipeError("--no-prior takes no other prior option")
    if alpha is not None and profile is not None:
        raise RecipeError("choose one source of alpha: --alpha A or --profile FILE")
    if no_prior:
        return Prior(kind="none")
    kind = kind or ("exponential" if alpha is not None or profile is not None else None)
    if kind is None:
        return None  # frank with no prior option: merge() profiles the VLM first
    if profile is not None:
        return prior_from_profile(profile, kind)  # type: ignore[arg-type]
    if kind == "fitted":
        raise RecipeError("--prior fitted needs --profile FILE (its fitted C scales the prior)")
    from frankmerge.recipe import make_prior

    return make_prior(kind=kind, alpha=alpha)


PARAMETER_OPTIONS = ("beta", "lambda_v", "lambda_r", "weights", "density", "drop_rate", "scale", "seed", "k", "mergekit_compat")


def _parse_parameter(key: str, value: Any) -> Any:
    """Comma lists from the command line: per-layer values, or the two TIES/DARE weights."""
    if key not in ("beta", "lambda_v", "lambda_r", "weights"):
        return value
    try:
        values = [float(part) for part in str(value).split(",")]
    except ValueError as exc:
        raise RecipeError(f"--{key.replace('_', '-')} {value!r}: expected a number or a comma-separated list") from exc
    if key == "weights":
        return values
    return values[0] if len(values) == 1 else values


def _print_summary(result: Any) -> None:
    click.echo(f"merged model written to {result.out}")
    click.echo(f"{'block':>5} {'|tau_V|^2':>11} {'|tau_R|^2':>11} {'cos':>7} {'w_V':>7} {'lambda_V':>9} {'lambda_R':>9}")
    for s, c in zip(result.stats, result.coefficients, strict=True):
        click.echo(
            f"{s.index:>5} {s.norm_v_sq:>11.4g} {s.norm_r_sq:>11.4g} {s.cos:>+7.3f} "
            f"{'-' if c.w_v is None else format(c.w_v, '.4f'):>7} {c.lambda_v:>9.4f} {c.lambda_r:>9.4f}"
        )
    click.echo(f"report: {result.out / 'merge_report.json'}  (wall {result.report['wall_time_s']} s)")


@main.command()
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("frankmerge-demo"),
    show_default=True,
    help="Where the profile, analysis, merges, plots and demo_results.json go.",
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the trained testbed models are kept [$FRANKMERGE_CACHE/testbed or ~/.cache/frankmerge/testbed].",
)
@click.option("--quick", is_flag=True, help="The reduced CI testbed: 3 blocks of width 64, fewer items, a 3x3 grid (minutes).")
@click.option(
    "--regime",
    type=click.Choice(["llava", "qwen"]),
    default="llava",
    show_default=True,
    help="How the VLM is trained: llava (tower aligned to the frozen language model, brief fine-tune) "
    "or qwen (language model trained hard on images). See docs/testbed.md.",
)
@click.option(
    "--testbed",
    type=click.Choice(["v2", "v3"]),
    default="v3",
    show_default=True,
    help="Testbed version: v3 (the default since it was measured) adds a stage-1 term pulling each image token "
    "toward its cell word's embedding, which made alignment converge in every seed; v2 is without it "
    '(llava regime only; docs/testbed.md, "Testbed v3").',
)
@click.option("--no-drift", is_flag=True, help="Skip the SFT / DRIFT fine-tunes.")
@click.option("--seed", type=int, default=0, show_default=True, help="Testbed seed (training data and initialisation).")
@click.option("--items", type=int, help="Evaluation items per task [200; --quick 60].")
@click.option("--rebuild", is_flag=True, help="Retrain the models even if the cache holds them.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def demo(
    workdir: Path,
    cache_dir: Path | None,
    quick: bool,
    regime: str,
    testbed: str,
    no_drift: bool,
    seed: int,
    items: int | None,
    rebuild: bool,
    quiet: bool,
) -> None:
    """Train (first run) or reuse tiny base / reasoner / VLM models, then profile, analyze, merge with
    FRANK and every baseline, fine-tune with SFT and DRIFT, evaluate everything and print the table
    and a three-line verdict. Offline, CPU only."""
    import torch

    from frankmerge.demo import DemoOptions, run_demo
    from frankmerge.testbed.trained.config import preset

    torch.set_num_threads(1)  # tiny models: extra OpenMP threads only add contention
    base = DemoOptions.quick() if quick else DemoOptions()
    config = preset(regime, quick, testbed).with_seed(seed)
    overrides: dict[str, Any] = {"config": config, "cache_dir": cache_dir, "rebuild": rebuild}
    if no_drift:
        overrides["drift"] = None
    overrides["progress"] = not quiet
    if items is not None:
        overrides["n_items"] = items
    options = DemoOptions(**{**base.__dict__, **overrides})
    result = run_demo(workdir, options)
    trained = ", ".join(result.models.built) or "none (all cached)"
    click.echo(f"testbed {options.config.name} seed {seed}: trained {trained}; models in {result.models.base.parent}")
    click.echo(result.table)
    for line in result.summary:
        click.echo(line)
    click.echo("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result.timings.items()))
    for name, path in result.files.items():
        click.echo(f"{name}: {path}")
    click.echo("")
    for line in result.verdict:
        click.echo(line)


@main.command()
@click.option("--vlm", required=True, help="Vision-language model: local directory or hub id.")
@click.option("--reasoner", required=True, help="Reasoning LLM: local directory or hub id.")
@click.option("--reasoning-tokens", default="<think>,</think>", show_default=True, help="Reasoner tokens to look for.")
def tokens(vlm: str, reasoner: str, reasoning_tokens: str) -> None:
    """Compare the two vocabularies by text before merging: collisions, padding, reasoning tokens."""
    import json as json_module

    from frankmerge.inputs import open_role
    from frankmerge.recipe import Prior, build_recipe
    from frankmerge.tokens import plan_tokens

    recipe = build_recipe({"vlm": vlm, "reasoner": reasoner, "base": reasoner, "prior": Prior(kind="none")}, source="options")
    opened = {role: open_role(role, getattr(recipe, role), recipe) for role in ("vlm", "reasoner")}
    try:
        plan = plan_tokens(
            opened["vlm"].weights_dir,
            opened["reasoner"].weights_dir,
            vlm_config=opened["vlm"].config.raw,
            vlm_rows=opened["vlm"].checkpoint.info(opened["vlm"].layout.embed).shape[0],
            reasoner_rows=opened["reasoner"].checkpoint.info(opened["reasoner"].layout.embed).shape[0],
            reasoning_tokens=[t.strip() for t in reasoning_tokens.split(",") if t.strip()],
            carry=True,
        )
    finally:
        for item in opened.values():
            item.checkpoint.close()
    click.echo(json_module.dumps(plan.report, indent=2, ensure_ascii=False))


@main.command()
def layouts() -> None:
    """List the layout tables (model families) frankmerge knows."""
    for family in FAMILIES:
        click.echo(
            f"{family.name:16} {family.kind:4}  model_type={','.join(family.model_types):16} "
            f"decoder under {' | '.join(p or '(root)' for p in family.decoder_prefixes)}"
        )


# Command groups that live in their own modules (analysis, DRIFT, evaluation) register here;
# each module exposes COMMANDS, a list of click commands.
_COMMAND_MODULES = ("frankmerge.cli_check", "frankmerge.cli_analysis", "frankmerge.cli_drift", "frankmerge.cli_eval")


def _register_command_modules() -> None:
    for module_name in _COMMAND_MODULES:
        if importlib.util.find_spec(module_name) is None:
            continue
        for command in importlib.import_module(module_name).COMMANDS:
            main.add_command(command)


_register_command_modules()


def entry_point() -> None:
    """The ``frankmerge`` console script: ``main``, then, for file-only commands, an immediate exit
    once stdout, stderr and logging are flushed, skipping ~1 s of interpreter teardown."""
    try:
        main()
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    if not (_invoked and _invoked[-1] in FAST_EXIT_COMMANDS):
        sys.exit(code)
    if isinstance(code, str):  # sys.exit("message") prints it and exits with 1
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    entry_point()
