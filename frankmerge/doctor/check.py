"""The pair doctor: what would break this merge although every tensor name and shape matches.

Three kinds of evidence, cheapest first: the decoder configs field by field (RoPE, norm ε,
activation, …, with a severity for each), the chat templates, and the lineage — documented bases
of known models and distances measured on sampled weights. ``check_pair`` gathers them for
``frankmerge check`` and as the first step of ``merge``, ``analyze`` and ``drift-prior``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from frankmerge.doctor.fields import (
    COSMETIC,
    FIELDS,
    FUNCTION,
    SEVERITY_ORDER,
    Field,
    decoder_facts,
    mrope_only_difference,
)
from frankmerge.doctor.lineage import Lineage, measure_lineage
from frankmerge.doctor.lineages import documented_base, is_same_model
from frankmerge.doctor.templates import TemplateFacts, read_template_facts, template_findings

if TYPE_CHECKING:
    from frankmerge.inputs import RoleInput
    from frankmerge.layouts import ModelConfig

MRoPE_NOTE = "M-RoPE in some roles only: on text positions M-RoPE is the same 1-D rotation, so text is unaffected"


@dataclass(frozen=True)
class FieldVerdict:
    """One config fact across the roles."""

    field: Field
    values: dict[str, Any]
    severity: str | None  # None when every role agrees

    @property
    def same(self) -> bool:
        return self.severity is None

    @property
    def meaning(self) -> str:
        if self.field.name == "mrope_section" and self.severity == COSMETIC:
            return MRoPE_NOTE
        return self.field.meaning

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field.name,
            "values": self.values,
            "verdict": "same" if self.same else self.severity,
            "meaning": None if self.same else self.meaning,
        }


def compare_configs(configs: dict[str, ModelConfig]) -> list[FieldVerdict]:
    """Every known field that any role sets, with its verdict; roles in the order given."""
    facts = {role: decoder_facts(config.text, tie=config.tie_word_embeddings) for role, config in configs.items()}
    verdicts = []
    for item in FIELDS:
        values = {role: facts[role][item.name] for role in facts}
        if all(v is None for v in values.values()):
            continue
        distinct = {repr(_comparable(v)) for v in values.values()}
        severity = None if len(distinct) == 1 else item.severity
        if item.name == "mrope_section" and severity is not None and mrope_only_difference(values):
            severity = COSMETIC
        verdicts.append(FieldVerdict(item, values, severity))
    return verdicts


def _comparable(value: Any) -> Any:
    """1e4 and 10000 are the same θ; lists and tuples the same sections."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return tuple(_comparable(v) for v in value)
    return value


@dataclass
class PairCheck:
    """Everything the doctor found about one (VLM, reasoner[, base]) triple."""

    references: dict[str, str]
    fields: list[FieldVerdict]
    templates: dict[str, TemplateFacts] = field(default_factory=dict)
    template_findings: list[str] = field(default_factory=list)
    documented: dict[str, dict[str, Any]] = field(default_factory=dict)
    lineage_findings: list[str] = field(default_factory=list)
    lineage: Lineage | None = None

    def mismatches(self, severity: str | None = None) -> list[FieldVerdict]:
        found = [v for v in self.fields if not v.same]
        found = found if severity is None else [v for v in found if v.severity == severity]
        return sorted(found, key=lambda v: SEVERITY_ORDER[v.severity or COSMETIC])

    def function_warnings(self) -> list[str]:
        """One line per field that changes what the merged decoder computes."""
        return [
            f"{v.field.name} differs ({_values_text(v.values)}): {v.meaning}; the merged config keeps the VLM's value"
            for v in self.mismatches(FUNCTION)
        ]

    def notes(self) -> list[str]:
        """One line per field that differs without changing the function (edges, cosmetic)."""
        return [
            f"{v.field.name} differs ({_values_text(v.values)}): {v.meaning} [{v.severity}]"
            for v in self.mismatches()
            if v.severity != FUNCTION
        ]

    def findings(self) -> list[str]:
        """Everything worth acting on, most serious first: function-changing fields, lineage, templates."""
        return self.function_warnings() + self.lineage_findings + self.template_findings

    def to_dict(self) -> dict[str, Any]:
        return {
            "roles": self.references,
            "fields": [v.to_dict() for v in self.fields],
            "function_changing": [v.field.name for v in self.mismatches(FUNCTION)],
            "templates": {role: facts.to_dict() for role, facts in self.templates.items()},
            "documented_lineage": self.documented,
            "lineage": None if self.lineage is None else self.lineage.to_dict(),
            "findings": self.findings(),
            "notes": self.notes(),
        }

    def table(self) -> list[str]:
        """The field table, one row per field, roles as columns."""
        roles = list(self.references)
        width = max([len(r) for r in roles] + [12])
        rows = [f"{'field':28} " + " ".join(f"{r:>{width}}" for r in roles) + "  verdict"]
        for v in self.fields:
            cells = " ".join(f"{_short(v.values[r]):>{width}}" for r in roles)
            rows.append(f"{v.field.name:28} {cells}  {'same' if v.same else v.severity}")
        return rows


def _values_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{role} {_short(value)}" for role, value in values.items())


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def check_pair(
    inputs: dict[str, RoleInput],
    *,
    candidates: dict[str, RoleInput] | None = None,
    lineage: bool = True,
    think_template: bool = False,
    carry_tokens: bool = False,
) -> PairCheck:
    """Configs, templates and lineage of the opened roles ("vlm", "reasoner", optionally "base").

    Lineage from the weights needs ``base``; ``candidates`` are further bases to rank.
    ``think_template`` and ``carry_tokens`` say what the merge will do about templates, so that
    the findings do not ask for it.
    """
    references = {role: item.reference for role, item in inputs.items()}
    result = PairCheck(references, compare_configs({role: item.config for role, item in inputs.items()}))
    result.templates = {role: read_template_facts(inputs[role].weights_dir) for role in ("vlm", "reasoner")}
    result.template_findings = template_findings(
        result.templates["vlm"], result.templates["reasoner"], think_template=think_template, carry_tokens=carry_tokens
    )
    result.documented, documented_findings = _documented(inputs)
    result.lineage_findings += documented_findings
    if lineage and "base" in inputs:
        result.lineage = measure_lineage(inputs, candidates)
        result.lineage_findings += result.lineage.findings
    return result


def _documented(inputs: dict[str, RoleInput]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Documented bases of the VLM and the reasoner, and whether --base is that base."""
    records: dict[str, dict[str, Any]] = {}
    findings = []
    for role in ("vlm", "reasoner"):
        item = inputs[role]
        entry = documented_base(item.reference, item.config.raw.get("_name_or_path"))
        if entry is None:
            continue
        own = inputs.get("reasoner_base") if role == "reasoner" else None
        base, flag = (own, "--reasoner-base") if own is not None else (inputs.get("base"), "--base")
        matches = None if base is None else is_same_model(base.reference, entry.base)
        records[role] = {"model": entry.model, "documented_base": entry.base, "source": entry.source, "base_matches": matches}
        if base is not None and not matches:
            fix = (
                f"τ_R then holds {entry.base}'s own training too; --reasoner-base {entry.base} leaves it out "
                "(which transfers more depends on where the skill was learned: docs/testbed.md, two bases)"
                if role == "reasoner"
                else f"pass --base {entry.base}"
            )
            findings.append(
                f"{entry.model} descends from {entry.base} ({entry.source}), and {flag} is {base.reference}: "
                f"if that is not the same model, {fix}"
            )
    return records, findings


def check_models(
    vlm: str,
    reasoner: str,
    base: str | None = None,
    *,
    reasoner_base: str | None = None,
    candidate_bases: tuple[str, ...] = (),
    allow_pickle: bool = False,
    allow_download: bool = False,
) -> PairCheck:
    """Open the models by reference and run every check: ``frankmerge check`` as a function.

    Models that are not homologous are reported (a finding), not refused; so is a candidate base
    that cannot be compared.
    """
    from frankmerge.errors import FrankmergeError, HomologyError
    from frankmerge.inputs import check_homology, open_role
    from frankmerge.recipe import MergeRecipe

    recipe = MergeRecipe.model_construct(allow_pickle=allow_pickle, allow_download=allow_download)
    references = {"vlm": vlm, "reasoner": reasoner} | ({"base": base} if base is not None else {})
    if reasoner_base is not None:
        references["reasoner_base"] = reasoner_base
    opened: dict[str, RoleInput] = {}
    candidates: dict[str, RoleInput] = {}
    problems: list[str] = []
    try:
        for role, reference in references.items():
            opened[role] = open_role(role, reference, recipe)
        try:
            check_homology(opened | ({} if base is not None else {"base": opened["reasoner"]}))
        except HomologyError as exc:
            problems.append(str(exc))
        for reference in candidate_bases:
            try:
                candidates[reference] = open_role("candidate-base", reference, recipe)
            except FrankmergeError as exc:
                problems.append(f"not comparable: {exc}")
        result = check_pair(opened, candidates=candidates, lineage=base is not None)
    finally:
        for item in [*opened.values(), *candidates.values()]:
            item.checkpoint.close()
    result.lineage_findings = problems + result.lineage_findings
    return result
