"""Data files: parquet and VLMEvalKit TSV layouts, image cells, and the errors for bad input."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from frankmerge.evaluation.benchmarks import BENCHMARKS, get_benchmark
from frankmerge.evaluation.data.images import image_bytes, image_refs, load_image
from frankmerge.evaluation.data.tables import read_table
from frankmerge.evaluation.errors import (
    DataFileError,
    EvaluationError,
    ImageDecodeError,
    MissingColumnError,
    PredictionsError,
    UnknownBenchmarkError,
)
from frankmerge.evaluation.items import Item
from frankmerge.evaluation.prompting import FailedPrompt, PreparedPrompt, content_parts, prepare
from frankmerge.evaluation.run import load_items, score_predictions

from . import builders


class TemplateOnly:
    """Stands in for a processor: renders messages so prompts can be checked without a model."""

    def apply_chat_template(self, messages: list[dict[str, Any]], chat_template: str | None = None, **_: Any) -> str:
        if chat_template is not None:
            return chat_template
        parts = messages[0]["content"]
        return "".join("<IMG>" if p["type"] == "image" else p["text"] for p in parts) + "\nassistant:"


def test_unknown_benchmark_lists_the_known_ones() -> None:
    with pytest.raises(UnknownBenchmarkError) as info:
        get_benchmark("mmmu-val")
    for name in BENCHMARKS:
        assert name in str(info.value)
    assert get_benchmark("MMMU-Pro-Vision").name == "mmmu_pro_vision"


def test_missing_file_and_missing_column_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="nope.parquet"):
        read_table(tmp_path / "nope.parquet")
    rows = [{k: v for k, v in r.items() if k != "answer"} for r in builders.mmmu_rows()]
    path = builders.write_parquet(tmp_path / "bad.parquet", rows)
    with pytest.raises(MissingColumnError, match=r"bad.parquet: column 'answer' missing"):
        load_items(get_benchmark("mmmu"), path)


def test_directory_reads_the_default_split_only(tmp_path: Path) -> None:
    builders.write_parquet(tmp_path / "Art" / "validation-00000-of-00001.parquet", builders.mmmu_rows()[:1])
    builders.write_parquet(tmp_path / "Art" / "dev-00000-of-00001.parquet", builders.mmmu_rows()[1:])
    items = load_items(get_benchmark("mmmu"), tmp_path)
    assert [i.id for i in items] == ["validation_Art_Theory_1"]
    with pytest.raises(DataFileError, match="'test'"):
        load_items(get_benchmark("mmmu"), tmp_path, split="test")


def test_vlmevalkit_tsv_with_base64_images_and_image_references(tmp_path: Path) -> None:
    rows = [
        {**r, "index": i, "image": builders.png() if i % 2 == 0 else str(i - 1), "image_path": r["question_id"]}
        for i, r in enumerate(builders.mme_rows())
    ]
    for r in rows:
        del r["question_id"]
    path = builders.vlmevalkit_tsv(tmp_path / "MME.tsv", rows)
    items = load_items(get_benchmark("mme"), path)
    assert [i.id for i in items] == [str(i) for i in range(6)]
    assert all(image_bytes(i.images[0]) == builders.png() for i in items)  # row 1 refers to row 0's image
    assert items[1].extra["image_key"] == items[0].extra["image_key"] == "existence/1.png"


def test_vlmevalkit_tsv_mmmu_with_letter_columns_and_a_list_of_images(tmp_path: Path) -> None:
    b64 = base64.b64encode(builders.png()).decode()
    row = {
        "index": 7,
        "id": "validation_Math_7",
        "question": "Pick one <image 2> vs <image 1>",
        "A": "x",
        "B": "y",
        "answer": "A",
        "image": str([b64, b64]),
    }
    (item,) = load_items(get_benchmark("mmmu"), builders.vlmevalkit_tsv(tmp_path / "MMMU.tsv", [row]))
    assert item.choices == ("x", "y") and item.kind == "multiple-choice" and len(item.images) == 2
    parts, order = content_parts(item.prompt, 2)
    assert order == [1, 0] and [p["type"] for p in parts[:4]] == ["text", "image", "text", "image"]


def test_image_cells_in_every_layout(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.png").write_bytes(builders.png())
    refs = image_refs("images/1.png", tmp_path, "img")
    assert refs[0].path == tmp_path / "images" / "1.png" and load_image(refs[0]).size == (56, 56)
    assert image_refs({"bytes": None, "path": None}, tmp_path, "x") == ()
    assert image_refs(None, tmp_path, "x") == ()
    assert len(image_refs([builders.png(), builders.png()], tmp_path, "x")) == 2


def test_undecodable_image_is_reported_with_the_item(tmp_path: Path) -> None:
    (bad,) = image_refs({"bytes": b"not an image", "path": "1.png"}, tmp_path, "image of item 9")
    with pytest.raises(ImageDecodeError, match="image of item 9"):
        load_image(bad)
    good = image_refs(builders.png(), tmp_path, "ok")
    items = [Item("9", "look <image 1>", (bad,), "A", "multiple-choice"), Item("10", "look", good, "A", "multiple-choice")]
    prepared = prepare(TemplateOnly(), items, "model")
    assert isinstance(prepared[0], FailedPrompt) and "image of item 9" in prepared[0].error
    assert isinstance(prepared[1], PreparedPrompt) and prepared[1].text == "<IMG>look\nassistant:"


def test_think_template_open_appends_think(tmp_path: Path) -> None:
    item = Item("1", "q", (), "A", "open")
    (prompt,) = prepare(TemplateOnly(), [item], "open")
    assert isinstance(prompt, PreparedPrompt) and prompt.text.endswith("<think>\n") and prompt.think_open
    template = tmp_path / "t.jinja"
    template.write_text("custom template <think>")
    (prompt,) = prepare(TemplateOnly(), [item], str(template))
    assert isinstance(prompt, PreparedPrompt) and prompt.text == "custom template <think>" and prompt.think_open
    with pytest.raises(EvaluationError, match="Jinja template file"):
        prepare(TemplateOnly(), [item], str(tmp_path / "missing.jinja"))


def test_predictions_with_ids_not_in_the_data_are_refused(tmp_path: Path) -> None:
    data = builders.write_parquet(tmp_path / "mme.parquet", builders.mme_rows())
    predictions = tmp_path / "generations.jsonl"
    lines = [{"id": "existence/1.png#1", "raw_text": "Yes", "finish_reason": "stop", "n_tokens": 1}]
    lines.append({"id": "nowhere#1", "raw_text": "No", "finish_reason": "stop", "n_tokens": 1})
    predictions.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.raises(PredictionsError, match="nowhere#1"):
        score_predictions("mme", data, predictions, tmp_path / "out")
    predictions.write_text(json.dumps({"id": "existence/1.png#1", "answer": "Yes"}) + "\n")
    with pytest.raises(PredictionsError, match=r"needs 'id' and 'raw_text' \(or 'prediction'\); this line has 'id', 'answer'"):
        score_predictions("mme", data, predictions, tmp_path / "out")


def test_vlmevalkit_tsv_mathvista_without_type_columns(tmp_path: Path) -> None:
    rows = [
        {
            "index": 1,
            "image": builders.png(),
            "question": "Find x.",
            "answer": "6",
            "choices": "['3', '4.5', '6', '9']",
            "skills": "['geometry reasoning']",
        },
        {
            "index": 2,
            "image": builders.png(),
            "question": "Ratio?",
            "answer": "1.45",
            "choices": "",
            "skills": "['arithmetic reasoning']",
        },
    ]
    bench = get_benchmark("mathvista")
    items = load_items(bench, builders.vlmevalkit_tsv(tmp_path / "MathVista_MINI.tsv", rows))
    assert [(i.kind, i.extra["answer_type"], i.extra["precision"]) for i in items] == [
        ("multiple-choice", "text", 0),
        ("open", "float", 2),
    ]
    assert "(C) 6" in items[0].prompt and items[0].groups["skills"] == ("geometry reasoning",)
    judged = [bench.judge(i, reply, None) for i, reply in zip(items, ["C", "1.452"], strict=True)]  # type: ignore[arg-type]
    assert [j.correct for j in judged] == [True, True]


def test_vlmevalkit_tsv_mmmu_pro_with_letter_columns(tmp_path: Path) -> None:
    row = {
        "index": 3,
        "id": "test_Art_3",
        "question": "Q",
        **{chr(65 + i): f"o{i}" for i in range(10)},
        "answer": "J",
        "image": builders.png(),
    }
    (item,) = load_items(get_benchmark("mmmu_pro"), builders.vlmevalkit_tsv(tmp_path / "MMMU_Pro_10c.tsv", [row]))
    assert len(item.choices) == 10 and "J. o9" in item.prompt
