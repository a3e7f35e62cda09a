"""Tiny hand-made benchmark files in each benchmark's published layout, written by the tests."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def png(color: tuple[int, int, int] = (200, 30, 30), size: int = 56) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def hf_image(color: tuple[int, int, int] = (200, 30, 30), name: str = "x.png") -> dict[str, Any]:
    """The struct a Hugging Face ``Image`` feature stores in parquet."""
    return {"bytes": png(color), "path": name}


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def mmmu_rows() -> list[dict[str, Any]]:
    """Three MMMU val questions: a 7-image multiple choice, an open numeric one, a list-valued gold."""
    images = {f"image_{i}": hf_image((30 * i, 10, 10), f"{i}.png") for i in range(1, 8)}
    none_images = {f"image_{i}": None for i in range(1, 8)}
    return [
        {
            "id": "validation_Art_Theory_1",
            "question": "Which painting is older? <image 1> <image 2>",
            "options": "['the first', 'the second', 'both', 'neither']",
            "explanation": "",
            **images,
            "img_type": "['Paintings']",
            "answer": "B",
            "topic_difficulty": "Easy",
            "question_type": "multiple-choice",
            "subfield": "Art History",
        },
        {
            "id": "validation_Physics_2",
            "question": "What is the speed in m/s? <image 1>",
            "options": "[]",
            "explanation": "",
            **{**none_images, "image_1": hf_image((0, 0, 200))},
            "img_type": "['Diagrams']",
            "answer": "3.5",
            "topic_difficulty": "Hard",
            "question_type": "open",
            "subfield": "Mechanics",
        },
        {
            "id": "validation_Computer_Science_3",
            "question": "Name a valid value. <image 1>",
            "options": "[]",
            "explanation": "",
            **{**none_images, "image_1": hf_image((0, 200, 0))},
            "img_type": "['Tables']",
            "answer": "['24/7', '3.429']",
            "topic_difficulty": "Medium",
            "question_type": "open",
            "subfield": "Data",
        },
    ]


def mathvista_rows() -> list[dict[str, Any]]:
    """MathVista testmini: gold of a multiple-choice question is the choice text."""
    meta = {
        "category": "math-targeted-vqa",
        "context": "geometry diagram",
        "grade": "high school",
        "img_height": 56,
        "img_width": 56,
        "language": "english",
        "skills": ["geometry reasoning", "algebraic reasoning"],
        "source": "Geometry3K",
        "split": "testmini",
        "task": "geometry problem solving",
    }
    return [
        {
            "pid": "1",
            "question": "Find x.",
            "image": "images/1.jpg",
            "decoded_image": hf_image(),
            "choices": ["3", "4.5", "6", "9"],
            "unit": None,
            "precision": None,
            "answer": "6",
            "question_type": "multi_choice",
            "answer_type": "text",
            "metadata": meta,
            "query": "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.\n"
            "Question: Find x.\nChoices:\n(A) 3\n(B) 4.5\n(C) 6\n(D) 9",
        },
        {
            "pid": "2",
            "question": "What is the ratio?",
            "image": "images/2.jpg",
            "decoded_image": hf_image((0, 0, 0)),
            "choices": None,
            "unit": None,
            "precision": 2.0,
            "answer": "1.45",
            "question_type": "free_form",
            "answer_type": "float",
            "metadata": {**meta, "skills": ["arithmetic reasoning"], "task": "figure question answering"},
            "query": "Hint: ... two decimal places ...\nQuestion: What is the ratio?",
        },
    ]


def mathvision_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": "1",
            "question": "Which shape is next? <image1>",
            "options": ["A", "B", "C", "D", "E"],
            "image": "images/1.jpg",
            "decoded_image": hf_image(),
            "answer": "C",
            "solution": None,
            "level": 2,
            "subject": "logic",
        },
        {
            "id": "2",
            "question": "What is the area? <image1>",
            "options": [],
            "image": "images/2.jpg",
            "decoded_image": hf_image((1, 2, 3)),
            "answer": "0.5",
            "solution": None,
            "level": 5,
            "subject": "metric geometry - area",
        },
    ]


def wemath_rows() -> list[dict[str, Any]]:
    """One 2-step group (ID 1) and one 3-step group (ID 2)."""

    def row(group: str, key: str, answer: str) -> dict[str, Any]:
        return {
            "ID": group,
            "split": "testmini",
            "knowledge concept": "Area",
            "question": f"Question {group} {key}",
            "option": "A. 1; B. 2; C. 3; D. 4",
            "answer": answer,
            "image_path": hf_image(),
            "key": key,
            "question number": 1,
            "knowledge concept description": "",
        }

    return [
        row("1", "2steps_1", "A"),
        row("1", "2steps_2", "B"),
        row("1", "2steps_multi", "C"),
        row("2", "3steps_1", "A"),
        row("2", "3steps_2", "B"),
        row("2", "3steps_3", "C"),
        row("2", "3steps_multi", "D"),
    ]


def mme_rows() -> list[dict[str, Any]]:
    """Two images of "existence" (two questions each) and one of "code_reasoning"."""

    def row(qid: str, question: str, answer: str, category: str) -> dict[str, Any]:
        return {"question_id": qid, "image": hf_image(), "question": question, "answer": answer, "category": category}

    return [
        row("existence/1.png", "Is there a cat? Please answer yes or no.", "Yes", "existence"),
        row("existence/1.png", "Is there a dog? Please answer yes or no.", "No", "existence"),
        row("existence/2.png", "Is there a car? Please answer yes or no.", "Yes", "existence"),
        row("existence/2.png", "Is there a bus? Please answer yes or no.", "No", "existence"),
        row("code_reasoning/1.png", "Does it print 3? Please answer yes or no.", "Yes", "code_reasoning"),
        row("code_reasoning/1.png", "Does it print 4? Please answer yes or no.", "No", "code_reasoning"),
    ]


def logicvista_rows() -> list[dict[str, Any]]:
    return [
        {
            "imagename": "1.png",
            "question": "Which two pieces fit? A. a B. b C. c D. d",
            "answer": "A, C",
            "reasoning": "",
            "skill": ["spatial reasoning"],
            "broad_capability": "puzzles",
            "image": hf_image(),
        },
        {
            "imagename": "2.png",
            "question": "What comes next? A. 1 B. 2 C. 3 D. 4",
            "answer": "B",
            "reasoning": "",
            "skill": ["inductive reasoning"],
            "broad_capability": "patterns",
            "image": hf_image(),
        },
    ]


def mathverse_rows() -> list[dict[str, Any]]:
    base = {
        "image": hf_image(),
        "metadata": {"split": "testmini", "source": "GeoQA", "subject": "Plane Geometry", "subfield": "Angle"},
    }
    return [
        {
            **base,
            "sample_index": "1",
            "problem_index": "1",
            "problem_version": "Text Dominant",
            "question": "text",
            "answer": "B",
            "question_type": "multi-choice",
            "query_cot": "q",
        },
        {
            **base,
            "sample_index": "5",
            "problem_index": "1",
            "problem_version": "Vision Only",
            "question": "",
            "answer": "B",
            "question_type": "multi-choice",
            "query_cot": "According to the question shown in the image, please first conduct reasoning.",
        },
        {
            **base,
            "sample_index": "10",
            "problem_index": "2",
            "problem_version": "Vision Only",
            "question": "",
            "answer": "\\frac{3}{2}",
            "question_type": "free-form",
            "query_cot": "According to the question shown in the image, please first conduct reasoning.",
        },
    ]


def mmmu_pro_rows(vision: bool) -> list[dict[str, Any]]:
    options = str([f"option {i}" for i in range(10)])
    if vision:
        return [{"id": "test_History_1", "image": hf_image(), "options": options, "answer": "C", "subject": "History"}]
    return [
        {
            "id": "test_History_1",
            "question": "When? <image 1>",
            "options": options,
            "explanation": "",
            "image_1": hf_image(),
            **{f"image_{i}": None for i in range(2, 8)},
            "img_type": "['Maps']",
            "answer": "C",
            "topic_difficulty": "Medium",
            "subject": "History",
        }
    ]


def vlmevalkit_tsv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as a VLMEvalKit TSV; bytes values become base64 text."""
    header = list(rows[0])
    lines = ["\t".join(header)]
    for row in rows:
        cells = [base64.b64encode(v).decode() if isinstance(v, bytes) else str(v) for v in (row[h] for h in header)]
        lines.append("\t".join(cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
