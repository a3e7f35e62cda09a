"""The streaming merge: the one place where blocks are read, merged and written.

Order of work: open and check the inputs, plan every output tensor, then stream — the VLM's
non-decoder tensors are copied, each decoder block is read twice (statistics, then the merge
with that block's coefficients), and the shared tensors (embeddings, final norm, lm_head)
follow the embeddings policy. The output is verified and renamed into place only when complete.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from frankmerge import timing, workers
from frankmerge.checkpoints.dtypes import F32, OUTPUT_DTYPES, DType
from frankmerge.checkpoints.output import (
    check_free_space,
    check_output_apart,
    check_output_free,
    copy_side_files,
    verify_output,
    write_config,
)
from frankmerge.checkpoints.resolve import resolve_checkpoint
from frankmerge.checkpoints.staging import output_lock, remove_stale_partials, staging_directory
from frankmerge.checkpoints.writer import PlannedTensor, ShardedWriter, parse_size
from frankmerge.doctor import PairCheck, check_pair
from frankmerge.errors import RecipeError
from frankmerge.inputs import RoleInput, open_inputs, role_label, roles_of
from frankmerge.methods.frank import BlockCoefficients, BlockStats
from frankmerge.methods.registry import Method, build_method
from frankmerge.progress import progress_bar
from frankmerge.reasoner_base import reasoner_reader
from frankmerge.recipe import MergeRecipe, prior_from_profile
from frankmerge.report import write_model_card, write_report
from frankmerge.shared_tensors import SharedRecord, sources, write_shared
from frankmerge.streaming import (
    Source,
    Sums,
    Workspace,
    task_vector_sums,
    write_copy,
    write_elementwise,
    write_merged,
)
from frankmerge.tokens import TokenPlan, add_think_prefix, plan_tokens, write_generation_config
from frankmerge.workers import available_cores

log = logging.getLogger(__name__)
PROFILE_NAME = "profile.json"
# Elements per chunk: 1 Mi. With the fused kernels 1-2 Mi are equally fast and 4 Mi slower (a
# 1.5B merge's block loop took 3.0 s instead of 2.1: the writer's 4 MiB slots no longer stay in L2);
# torch's path (float64 inputs) keeps its float32 buffers in the caches between passes at this size.
DEFAULT_CHUNK = 1 << 20
ELEMENTWISE_METHODS = ("ties", "dare_linear", "dare_ties")  # torch computes these on whole tensors


@dataclass
class MergeResult:
    out: Path
    stats: list[BlockStats]
    coefficients: list[BlockCoefficients]
    shared: list[SharedRecord] = field(default_factory=list)
    report: dict[str, object] = field(default_factory=dict)


def merge(
    recipe: MergeRecipe,
    out: Path | str,
    *,
    overwrite: bool = False,
    progress: bool = True,
    chunk: int = DEFAULT_CHUNK,
    threads: int | None = None,
) -> MergeResult:
    """Merge ``recipe``'s VLM and reasoner into ``out``; raise a FrankmergeError on bad input.

    ``threads`` caps the threads that compute (default: every core the process may run on); the
    result is the same bit for bit for any value. A second merge into the same ``out`` raises
    OutputBusyError at once, before reading anything.
    """
    started = time.perf_counter()
    out = Path(out)
    check_output_apart(out, _input_paths(recipe))  # before anything is read, --overwrite or not
    with output_lock(out), timing.recording():  # a second merge to this --out stops here, before it reads or writes
        remove_stale_partials(out)
        check_output_free(out, overwrite=overwrite)
        return _merge_locked(recipe, out, overwrite=overwrite, progress=progress, chunk=chunk, threads=threads, started=started)


def _merge_locked(
    recipe: MergeRecipe, out: Path, *, overwrite: bool, progress: bool, chunk: int, threads: int, started: float
) -> MergeResult:
    """Open the inputs and merge; runs under ``out``'s lock, after stale partial outputs are removed."""
    with timing.phase("open_inputs"):
        inputs = open_inputs(recipe)
    threads = available_cores() if threads is None else max(1, threads)
    if chunk % workers.PIECE == 0:  # one chunk gives every thread a piece (sums do not depend on the chunk: see workers)
        chunk = max(chunk, threads * workers.PIECE)
    # torch computes only what the kernels do not take (float64 inputs, TIES/DARE), and is imported
    # only then; its reductions split by thread count, so it gets the threads only where its
    # results are element-wise.
    torch_threads = threads if recipe.method in ELEMENTWISE_METHODS else 1
    try:
        with workers.torch_threads(torch_threads):
            with timing.phase("pair_check"):
                pair = check_merge_pair(recipe, inputs)
            with workers.using(threads), tempfile.TemporaryDirectory(prefix="frankmerge-profile-") as scratch:
                profile_dir = None
                if recipe.method == "frank" and recipe.prior is None:
                    _refuse_profiling_remote_code(inputs["vlm"])
                    recipe, profile_dir = _profile_first(recipe, out, Path(scratch), progress=progress), Path(scratch)
                return _merge_opened(
                    recipe,
                    inputs,
                    out,
                    overwrite=overwrite,
                    progress=progress,
                    chunk=chunk,
                    started=started,
                    profile_dir=profile_dir,
                    pair=pair,
                )
    finally:
        for item in inputs.values():
            item.checkpoint.close()


def check_merge_pair(recipe: MergeRecipe, inputs: dict[str, RoleInput]) -> PairCheck:
    """The pair doctor as a merge's first step: warn about every finding; ``strict`` refuses the
    config fields that change what the decoder computes."""
    pair = check_pair(inputs, think_template=recipe.think_template, carry_tokens=recipe.carry_reasoning_tokens)
    function_changing = pair.function_warnings()
    if recipe.strict and function_changing:
        more = f" (+{len(function_changing) - 1} more)" if len(function_changing) > 1 else ""
        raise RecipeError(f"--strict: {function_changing[0]}{more}; see `frankmerge check` for the whole table")
    for line in pair.findings():
        log.warning("pair check: %s", line)
    return pair


def _refuse_profiling_remote_code(vlm: RoleInput) -> None:
    """Merging never runs a checkpoint's own code, so such a VLM cannot be profiled for α here
    (InternVL chat checkpoints can: they are profiled through transformers' own InternVL)."""
    raw = vlm.config.raw
    if raw.get("model_type") == "internvl_chat":
        return
    if "auto_map" in raw or raw.get("model_type") == "llava_llama":
        raise RecipeError(
            f"--vlm {vlm.reference}: FRANK's α is measured by running the VLM, and this checkpoint runs only through "
            "its own code, which merge never executes; pass --alpha (the paper used α̂ from its Fig. 2), --profile or --no-prior"
        )


def _profile_first(recipe: MergeRecipe, out: Path, scratch: Path, *, progress: bool) -> MergeRecipe:
    """FRANK with no prior option: measure α̂ on the bundled calibration images, and say so.

    The profile (JSON and plot) is written next to the merged model and recorded in its report.
    """
    from frankmerge.analysis import profile_for_merge

    log.warning("no prior option given: profiling %s on the bundled calibration images for FRANK's α", recipe.vlm)
    workers.torch_module()  # runs the VLM with torch, on the merge's thread count for it
    profile_json = scratch / PROFILE_NAME
    profile_for_merge(recipe.vlm, profile_json, allow_download=recipe.allow_download, progress=progress)
    prior = prior_from_profile(profile_json).model_copy(update={"profile": str(out.absolute() / PROFILE_NAME)})
    return recipe.model_copy(update={"prior": prior})


def _input_paths(recipe: MergeRecipe) -> dict[str, Path]:
    """Each role's local directory (hub ids through the cache), resolved without reading a file."""
    return {
        role: resolve_checkpoint(getattr(recipe, role), role=role_label(role), allow_download=recipe.allow_download)
        for role in roles_of(recipe)
    }


def _merge_opened(
    recipe: MergeRecipe,
    inputs: dict[str, RoleInput],
    out: Path,
    *,
    overwrite: bool,
    progress: bool,
    chunk: int,
    started: float,
    profile_dir: Path | None = None,
    pair: PairCheck | None = None,
) -> MergeResult:
    vlm = inputs["vlm"]
    layout = vlm.layout
    profiled = recipe.prior.profile_layers if recipe.prior else None
    if recipe.prior is not None and profiled is not None and profiled != layout.num_blocks:
        raise RecipeError(
            f"--profile {recipe.prior.profile}: profiled a model with {profiled} layers, but the VLM has "
            f"{layout.num_blocks}; profile this VLM with `frankmerge profile`"
        )
    out_dtype = _output_dtype(recipe, vlm)
    keep_copy_dtype = recipe.dtype == "auto"
    embed_rows = vlm.checkpoint.info(layout.embed).shape[0]
    reasoner = inputs["reasoner"]
    tokens = plan_tokens(
        vlm.weights_dir,
        reasoner.weights_dir,
        vlm_config=vlm.config.raw,
        vlm_rows=embed_rows,
        reasoner_rows=reasoner.checkpoint.info(reasoner.layout.embed).shape[0],
        reasoning_tokens=list(recipe.reasoning_tokens),
        carry=recipe.carry_reasoning_tokens,
    )
    plan = _plan(vlm, out_dtype, keep_copy_dtype, tokens)
    method = build_method(recipe, layout.num_blocks)
    if method.elementwise and recipe.embeddings == "merge_shared":
        raise RecipeError(f"embeddings=merge_shared needs a coefficient method; {recipe.method} is element-wise, use keep_vlm")
    check_free_space(out, sum(t.nbytes for t in plan) + (1 << 20))  # last check: it creates out's parent
    ws = Workspace(chunk, out_dtype, allow_nonfinite=recipe.allow_nonfinite)
    result = MergeResult(out, [], [])

    with staging_directory(out, overwrite=overwrite) as staging:
        # Multi-folder checkpoints (NVILA) keep their layout: merged weights go where the LLM was.
        weights_out = staging / vlm.weights_dir.relative_to(vlm.path)
        weights_out.mkdir(exist_ok=True)
        writer = ShardedWriter(
            weights_out, plan, parse_size(recipe.max_shard_size), background=True, slot_bytes=chunk * 4, slots=6
        )
        try:
            with timing.phase("other_tensors"):  # the VLM's vision tower etc.: checked, then copied
                for name in layout.other:
                    write_copy(ws, writer, name, Source("vlm", vlm.checkpoint, name))
            phases = timing.current()
            if phases is not None:
                phases.set("startup", timing.process_age())  # process start to the first block
                phases.set("before_blocks", time.perf_counter() - started)
            blocks_started = time.perf_counter()
            precomputed = [_block_stats(ws, inputs, i) for i in range(layout.num_blocks)] if method.global_stats else None
            if precomputed is not None:
                method.prepare(precomputed)
            bar = progress_bar(range(layout.num_blocks), desc="merging blocks", unit="block", disable=not progress)
            ahead_ok = workers.current().threads > 1  # one thread: no statistics thread beside the merge
            with _StatsAhead(inputs, layout.num_blocks, chunk, recipe.allow_nonfinite, precomputed, ahead_ok) as ahead:
                for index in bar:
                    stats, coefficients = _merge_block(ws, writer, inputs, index, method, ahead.stats(index))
                    result.stats.append(stats)
                    result.coefficients.append(coefficients)
                    bar.set_postfix(lambda_v=f"{coefficients.lambda_v:.3f}")
            if phases is not None:
                phases.set("blocks_wall", time.perf_counter() - blocks_started)
            with timing.phase("shared_tensors"):
                result.shared = write_shared(ws, writer, inputs, recipe, result.coefficients, tokens)
            with timing.phase("close"):
                weight_map = writer.close()
        except BaseException:
            writer.abort()
            raise
        verify_output(weights_out, plan, vlm.checkpoint.names())
        _write_side_files(vlm, staging, weights_out)
        _write_token_files(weights_out, tokens, recipe)
        llm_config = json.loads((vlm.weights_dir / "config.json").read_text())
        write_config(llm_config, weights_out, tied=layout.lm_head is None, dtype=out_dtype, vocab_rows=tokens.rows(embed_rows))
        if profile_dir is not None:  # the profile made for this merge goes with it
            for produced in profile_dir.iterdir():
                shutil.copy2(produced, staging / produced.name)
        result.report = write_report(
            staging,
            recipe=recipe,
            inputs=inputs,
            result_stats=result.stats,
            coefficients=result.coefficients,
            shared=[vars(s) for s in result.shared],
            method_settings=method.settings,
            tokens=tokens.report,
            out_dtype=out_dtype,
            weight_files=sorted(set(weight_map.values())),
            wall_time_s=time.perf_counter() - started,
            peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            profile_made_here=profile_dir is not None,
            compatibility=None if pair is None else pair.to_dict(),
            timings=None if timing.current() is None else timing.current().as_dict(),  # type: ignore[union-attr]
        )
        reproducible = _with_absolute_paths(recipe, inputs)
        write_model_card(staging, out.name, reproducible, result.report)
        (staging / "frankmerge_recipe.yaml").write_text(reproducible.to_yaml())
    log.info("merged into %s", out)
    return result


def _write_side_files(vlm: RoleInput, staging: Path, weights_out: Path) -> None:
    """Everything of the VLM but its weights: root files and sub-folders, and the LLM folder's own files."""
    copy_side_files(vlm.path, staging, skip=weights_out.name if weights_out != staging else None)
    if weights_out != staging:
        shutil.copy2(vlm.path / "config.json", staging / "config.json")
        copy_side_files(vlm.weights_dir, weights_out)


def _write_token_files(staging: Path, tokens: TokenPlan, recipe: MergeRecipe) -> None:
    """Tokenizer with the carried reasoning tokens, R1-style chat template, reasoning generation config."""
    if tokens.tokenizer is not None:
        tokens.tokenizer.save_pretrained(staging)
    if recipe.think_template:
        tokens.report["think_template_files"] = add_think_prefix(staging)
    if recipe.generation_config == "reasoning":
        tokens.report["generation_config"] = write_generation_config(staging)


def _with_absolute_paths(recipe: MergeRecipe, inputs: dict[str, RoleInput]) -> MergeRecipe:
    """The recipe with local directories made absolute (hub ids stay ids), to rerun from anywhere."""
    update = {role: str(item.path) for role, item in inputs.items() if Path(item.reference).expanduser().exists()}
    return recipe.model_copy(update=update)


def _output_dtype(recipe: MergeRecipe, vlm: RoleInput) -> DType:
    if recipe.dtype != "auto":
        return OUTPUT_DTYPES[recipe.dtype]
    first = next(iter(vlm.layout.blocks[0].values()))
    stored = vlm.checkpoint.info(first).dtype
    return stored if stored in OUTPUT_DTYPES.values() else F32


def _plan(vlm: RoleInput, out_dtype: DType, keep_copy_dtype: bool, tokens: TokenPlan) -> list[PlannedTensor]:
    """Every output tensor in the order the merge produces it: others, blocks, shared."""
    layout = vlm.layout

    def planned(name: str, merged: bool) -> PlannedTensor:
        info = vlm.checkpoint.info(name)
        dtype = info.dtype
        if info.dtype.is_floating_point and (merged or not keep_copy_dtype):
            dtype = out_dtype
        shape = info.shape
        if name in (layout.embed, layout.lm_head):  # carried reasoning tokens may add rows
            shape = (tokens.rows(shape[0]), *shape[1:])
        return PlannedTensor(name, dtype, shape)

    plan = [planned(name, merged=False) for name in layout.other]
    for block in layout.blocks:
        plan += [planned(name, merged=True) for name in block.values()]
    shared = [layout.embed, layout.norm] + ([layout.lm_head] if layout.lm_head else [])
    plan += [planned(name, merged=True) for name in shared]
    return plan


class _StatsAhead:
    """Block l+1's statistics pass on a thread of its own while block l is merged and written.

    Both passes hand their pieces to the same workers (``frankmerge.workers``), so the two together
    use at most ``--threads`` cores; with one thread there is no thread ahead. The thread has its
    own chunk buffers; its errors (NaN/Inf in an input) are raised when the merge asks for that block.
    """

    def __init__(
        self,
        inputs: dict[str, RoleInput],
        blocks: int,
        chunk: int,
        allow_nonfinite: bool,
        known: list[BlockStats] | None,
        ahead: bool = True,
    ) -> None:
        self._inputs, self._blocks, self._known = inputs, blocks, known
        ahead = ahead and known is None
        self._ws = Workspace(chunk, F32, allow_nonfinite=allow_nonfinite) if ahead else None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="frankmerge-stats") if ahead else None
        self._pending: dict[int, Future[BlockStats]] = {}

    def __enter__(self) -> _StatsAhead:
        self._submit(0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            for future in self._pending.values():
                future.cancel()
            self._pool.shutdown(wait=True)

    def stats(self, index: int) -> BlockStats | None:
        """Block ``index``'s statistics, or None when there is no thread ahead (the merge computes them)."""
        if self._known is not None:
            return self._known[index]
        if self._pool is None:
            return None
        self._submit(index)
        self._submit(index + 1)
        return self._pending.pop(index).result()

    def _submit(self, index: int) -> None:
        if self._pool is not None and self._ws is not None and index < self._blocks and index not in self._pending:
            self._pending[index] = self._pool.submit(_block_stats, self._ws, self._inputs, index)


def _block_triples(inputs: dict[str, RoleInput], index: int) -> list[tuple[Source, Source, Source]]:
    """(VLM, reasoner, base) sources of each tensor of one block; with --reasoner-base the reasoner
    is read as θ_0 + (θ_R − θ_0R), so every method sees τ_R over the reasoner's own base."""
    reasoner = reasoner_reader(inputs, index)
    triples = []
    for suffix in inputs["vlm"].layout.blocks[index]:
        vlm, own, base = sources(inputs, lambda layout, suffix=suffix: layout.blocks[index][suffix])
        triples.append((vlm, Source(own.role, reasoner, own.name), base))  # type: ignore[arg-type]
    return triples


def _block_stats(ws: Workspace, inputs: dict[str, RoleInput], index: int) -> BlockStats:
    """One block's task-vector sums; also proves all three inputs finite (or names the culprit)."""
    sums = Sums()
    with timing.phase("statistics"):
        for triple in _block_triples(inputs, index):
            sums.add(task_vector_sums(ws, *triple, triple[0].checkpoint.info(triple[0].name).numel))
    return BlockStats(index, sums.norm_v_sq, sums.norm_r_sq, sums.dot_vr, sums.norm_0_sq)


def _merge_block(
    ws: Workspace,
    writer: ShardedWriter,
    inputs: dict[str, RoleInput],
    index: int,
    method: Method,
    stats: BlockStats | None = None,
) -> tuple[BlockStats, BlockCoefficients]:
    """Pass 1: the block's task-vector sums (unless known); pass 2: write the block by ``method``."""
    if stats is None:
        stats = _block_stats(ws, inputs, index)
    coefficients = method.coefficients(stats)
    with timing.phase("merge"):
        _write_block(ws, writer, inputs, index, method, coefficients)
    return stats, coefficients


def _write_block(
    ws: Workspace,
    writer: ShardedWriter,
    inputs: dict[str, RoleInput],
    index: int,
    method: Method,
    coefficients: BlockCoefficients,
) -> None:
    """Pass 2 of one block: each tensor by ``method`` with the block's coefficients."""
    for triple in _block_triples(inputs, index):
        if method.elementwise:
            write_elementwise(ws, writer, triple[0].name, triple, method.merge_delta)
            continue
        numel = triple[0].checkpoint.info(triple[0].name).numel
        lambdas = (coefficients.lambda_v, coefficients.lambda_r)
        write_merged(ws, writer, triple[0].name, triple, *lambdas, numel, numel, inputs_checked=True)
