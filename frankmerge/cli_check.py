"""``frankmerge check``: the pair doctor on its own — configs, templates, lineage — before a merge."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

EXIT_FUNCTION_CHANGING = 1  # --strict: same code as bad input, so scripts can stop on it


@click.command()
@click.option("--vlm", required=True, help="Vision-language model: local directory or hub id.")
@click.option("--reasoner", required=True, help="Reasoning LLM.")
@click.option("--base", help="The base LLM both should descend from (needed for the lineage check).")
@click.option("--reasoner-base", help="The reasoner's own base, when it is not --base.")
@click.option("--candidate-base", "candidate_bases", multiple=True, help="Another possible base to rank (repeatable).")
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False), help="Also write the whole check here.")
@click.option("--strict", is_flag=True, help="Exit 1 when a config field that changes the function differs.")
@click.option("--allow-pickle", is_flag=True, help="Read pickled .bin weights (weights_only=True).")
@click.option("--download", "allow_download", is_flag=True, help="Download hub ids missing from the cache.")
def check(
    vlm: str,
    reasoner: str,
    base: str | None,
    reasoner_base: str | None,
    candidate_bases: tuple[str, ...],
    json_out: Path | None,
    strict: bool,
    allow_pickle: bool,
    allow_download: bool,
) -> None:
    """Is this pair mergeable? Compare the decoder configs field by field (RoPE, norm ε, activation,
    windows, soft-capping, vocabulary …), the chat templates, and the lineage: documented bases of
    known models and each fine-tune's distance to --base measured on sampled weights."""
    from frankmerge.doctor.check import check_models

    result = check_models(
        vlm,
        reasoner,
        base,
        reasoner_base=reasoner_base,
        candidate_bases=candidate_bases,
        allow_pickle=allow_pickle,
        allow_download=allow_download,
    )
    for line in result.table():
        click.echo(line)
    for line in result.notes():
        click.echo(f"note: {line}")
    if result.lineage is not None:
        click.echo("")
        click.echo("distance to --base, ‖θ_X − θ_0‖/‖θ_0‖ (sampled blocks and rows):")
        own = result.lineage.to_base["reasoner"]
        rows = [("vlm → base", result.lineage.to_base["vlm"]), (f"reasoner → {own.reference}", own)]
        rows.append(("vlm → reasoner", result.lineage.between))
        for label, by_role in result.lineage.candidates.items():
            rows += [(f"{role} → {label}", distances) for role, distances in by_role.items()]
        for label, distances in rows:
            mean = distances.mean
            click.echo(f"  {label:40} {distances.problem or ('-' if mean is None else f'{mean:.4f}')}")
    findings = result.findings()
    click.echo("")
    click.echo("findings:" if findings else "findings: none — nothing here would break the merge")
    for line in findings:
        click.echo(f"  - {line}")
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n")
    if strict and result.function_warnings():
        sys.exit(EXIT_FUNCTION_CHANGING)


COMMANDS = [check]
