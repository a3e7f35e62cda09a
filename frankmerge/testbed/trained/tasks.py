"""The testbed's tasks: base text skills, perception, and reasoning with a chain of thought.

Reasoning problems combine colour counts (x+2y, 2x+y, x·y, x+y+z). The chain of thought first
states *every* colour's count in a fixed order ("red 2 green 0 ..."), then substitutes each operand
by naming its colour again and giving its count ("red 2 + 2 * blue 1"), then computes. Text
problems give the scene as words in the image's layout (the 4×4 grid of cells in reading order, one
word per cell, ``_`` for an empty one: 16 words right before the question, as the image's 16
patches are); visual problems give
it as an image, which only a merged (or DRIFT-tuned) model can combine with the chain of thought.

Every count is predicted right after its colour word, in answers too ("how many red ?" -> "red 2"):
the model then counts the scene's tokens that match the current token, a static association that
small models learn in a few hundred steps. Routing a colour named several tokens earlier to the
count (an in-context binding, what induction heads do) did not emerge within 1500 steps at these
sizes: with "how many red ?" -> "2" both the base and the VLM plateaued at predicting the count
from the total number of shapes. Each target token carries a kind, so teacher-forced accuracy can be
broken down (count, operand, arithmetic, format, answer) and partial transfer becomes visible.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from frankmerge.testbed.tiny_tokenizers import THINK_CLOSE, THINK_OPEN
from frankmerge.testbed.trained.images import Picture, Scene, draw, random_scene
from frankmerge.testbed.trained.vocab import COLOURS, EMPTY_CELL

TOKEN_KINDS: tuple[str, ...] = ("count", "operand", "arithmetic", "format", "answer", "copy")
REASONING_KINDS: tuple[str, ...] = ("count", "operand", "arithmetic", "format", "answer")


@dataclass(frozen=True)
class Problem:
    name: str
    arity: int
    template: str  # placeholders {0} {1} {2} stand for colour words, then for their counts
    compute: Callable[..., int]


PROBLEMS: tuple[Problem, ...] = (
    Problem("x+2y", 2, "{0} + 2 * {1}", lambda x, y: x + 2 * y),
    Problem("2x+y", 2, "2 * {0} + {1}", lambda x, y: 2 * x + y),
    Problem("x*y", 2, "{0} * {1}", lambda x, y: x * y),
    Problem("x+y+z", 3, "{0} + {1} + {2}", lambda x, y, z: x + y + z),
)


@dataclass(frozen=True)
class Example:
    """One prompt/response pair; ``target`` is word tokens, ``kinds`` their kinds (the end token is added later)."""

    task: str
    prompt: str
    target: tuple[str, ...]
    kinds: tuple[str, ...]
    answer: str
    image: np.ndarray | None = None
    follow_ups: tuple[tuple[str, tuple[str, ...]], ...] = ()  # further (question, answer words) turns
    cell_words: tuple[str, ...] = ()  # with an image: each patch's word (its shape's colour, else "_")


def _context(scene: Scene) -> str:
    """The scene as text: its grid of cells in reading order, exactly as the image's 16 patches come
    before the question, with no separator (an image has none either)."""
    return " ".join(scene.grid_words(EMPTY_CELL))


def _picture(scene: Scene, rng: np.random.Generator, image_scale: int) -> dict[str, object]:
    """An example's image fields: the rendered scene and each patch's word (what the alignment term
    aims at; at ``image_scale`` 1 one patch per grid cell, so the text scene's words)."""
    picture: Picture = draw(scene, rng, image_scale)
    return {"image": picture.image, "cell_words": picture.patch_words}


def counts_listing(scene: Scene) -> tuple[list[str], list[str]]:
    """Every colour and its count in fixed order ("red 2 green 0 ..."), and each word's kind: how the
    chain of thought opens, and what a caption says."""
    words, kinds = [], []
    for colour in COLOURS:
        words += [colour, str(scene.count(colour))]
        kinds += ["format", "count"]
    return words, kinds


def _fill(template: str, values: list[str]) -> tuple[list[str], list[bool]]:
    """Words of ``template`` with placeholders filled, and which words were placeholders."""
    words, slots = [], []
    for word in template.split():
        is_slot = word.startswith("{")
        words.append(values[int(word[1:-1])] if is_slot else word)
        slots.append(is_slot)
    return words, slots


def chain_of_thought(scene: Scene, problem: Problem, colours: list[str]) -> tuple[list[str], list[str], int]:
    """The reasoner's target: every colour's count in fixed order, the named substitution, the result."""
    listing, listing_kinds = counts_listing(scene)
    words, kinds = [THINK_OPEN, *listing], ["format", *listing_kinds]
    expr, slots = _fill(problem.template, colours)
    counts = [scene.count(c) for c in colours]
    words += [*expr, "="]
    kinds += ["format"] * (len(expr) + 1)
    for word, is_slot in zip(expr, slots, strict=True):
        words += [word, str(scene.count(word))] if is_slot else [word]
        kinds += ["format", "operand"] if is_slot else ["format"]
    result = problem.compute(*counts)
    words += ["=", str(result), THINK_CLOSE, str(result)]
    kinds += ["format", "arithmetic", "format", "answer"]
    return words, kinds, result


def reasoning(rng: np.random.Generator, visual: bool, image_scale: int = 1) -> Example:
    """A counting-arithmetic problem about a scene given as an image (visual) or as colour words (text)."""
    scene = random_scene(rng)
    problem = PROBLEMS[int(rng.integers(len(PROBLEMS)))]
    colours = [str(c) for c in rng.choice(COLOURS, size=problem.arity, replace=False)]
    words, kinds, result = chain_of_thought(scene, problem, colours)
    question = " ".join(_fill(problem.template, colours)[0]) + " ?"
    if visual:
        return Example("visual_reasoning", question, tuple(words), tuple(kinds), str(result), **_picture(scene, rng, image_scale))
    return Example("text_reasoning", f"{_context(scene)} {question}", tuple(words), tuple(kinds), str(result))


def _count_answer(scene: Scene, subject: str) -> tuple[str, str]:
    """The short answer to "how many <subject> ?": the subject, then its count ("red 2")."""
    return subject, str(len(scene.shapes) if subject == "shapes" else scene.count(subject))


def perception(rng: np.random.Generator, colour_only: bool = False, image_scale: int = 1) -> Example:
    """Image + "how many red ?" (or "how many shapes ?"), answered directly: "red 2"."""
    scene = random_scene(rng)
    subject = str(rng.choice(COLOURS)) if colour_only or rng.random() < 0.8 else "shapes"
    answer = _count_answer(scene, subject)
    return Example(
        "perception",
        f"how many {subject} ?",
        answer,
        ("format", "answer"),
        " ".join(answer),
        **_picture(scene, rng, image_scale),
    )


def perception_dialogue(rng: np.random.Generator, image_scale: int = 1) -> Example:
    """VLM training data: one image, then every colour's count (and sometimes the total) as a
    multi-turn dialogue in random order, like LLaVA's instruction data: four to five answers per
    image instead of one."""
    scene = random_scene(rng)
    subjects = [str(c) for c in rng.permutation(COLOURS)]
    if rng.random() < 0.5:
        subjects.insert(int(rng.integers(len(subjects) + 1)), "shapes")
    answers = [_count_answer(scene, s) for s in subjects]
    turns = tuple((f"how many {s} ?", a) for s, a in zip(subjects[1:], answers[1:], strict=True))
    first = f"how many {subjects[0]} ?"
    return Example(
        "perception",
        first,
        answers[0],
        ("format", "answer"),
        " ".join(answers[0]),
        follow_ups=turns,
        **_picture(scene, rng, image_scale),
    )


DESCRIBE = "describe the image"


def _description(scene: Scene) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What "describe the image" answers, for an image and a text scene alike: the counts listing and "."."""
    words, kinds = counts_listing(scene)
    return (*words, "."), (*kinds, "format")


def caption(rng: np.random.Generator, image_scale: int = 1) -> Example:
    """VLM alignment data (LLaVA's first stage is captioning): every colour's count, in the order the
    chain of thought lists them, which the base learned to say about text scenes (``describe_text``)."""
    scene = random_scene(rng)
    target, kinds = _description(scene)
    return Example("caption", DESCRIBE, target, kinds, " ".join(target), **_picture(scene, rng, image_scale))


def describe_text(rng: np.random.Generator) -> Example:
    """The base's text counterpart of a caption: a text scene, "describe the image", the counts listing."""
    scene = random_scene(rng)
    target, kinds = _description(scene)
    return Example("describe_text", f"{_context(scene)} {DESCRIBE}", target, kinds, " ".join(target))


def vlm_data(rng: np.random.Generator, image_scale: int = 1) -> Example:
    """The VLM's own training mixture: perception dialogues, with a third of captions."""
    return caption(rng, image_scale) if rng.random() < 1 / 3 else perception_dialogue(rng, image_scale)


def copy_words(rng: np.random.Generator) -> Example:
    items = [str(w) for w in rng.choice([*COLOURS, *map(str, range(10))], size=int(rng.integers(1, 7)))]
    return Example("copy", " ".join(["copy", *items, "."]), tuple(items), ("copy",) * len(items), " ".join(items))


def count_text(rng: np.random.Generator) -> Example:
    """Colour words, then two to four counting questions about them as a dialogue."""
    scene = random_scene(rng)
    subjects = [str(c) for c in rng.permutation([*COLOURS, "shapes"])[: int(rng.integers(2, 5))]]
    answers = [_count_answer(scene, s) for s in subjects]
    turns = tuple((f"how many {s} ?", a) for s, a in zip(subjects[1:], answers[1:], strict=True))
    prompt = f"{_context(scene)} how many {subjects[0]} ?"
    return Example("count_text", prompt, answers[0], ("format", "answer"), " ".join(answers[0]), follow_ups=turns)


def colour_text(rng: np.random.Generator) -> Example:
    words = [str(w) for w in rng.choice(COLOURS, size=int(rng.integers(1, 5)))]
    which = "first" if rng.random() < 0.5 else "last"
    answer = words[0] if which == "first" else words[-1]
    return Example("colour_text", " ".join([*words, ".", which, "colour", "?"]), (answer,), ("answer",), answer)


def arithmetic(rng: np.random.Generator) -> Example:
    """The arithmetic facts the chain of thought needs, on operands 0..4."""
    problem = PROBLEMS[int(rng.integers(len(PROBLEMS)))]
    operands = [int(x) for x in rng.integers(0, 5, size=problem.arity)]
    words, _ = _fill(problem.template, [str(x) for x in operands])
    answer = str(problem.compute(*operands))
    return Example("arithmetic", " ".join([*words, "?"]), (answer,), ("arithmetic",), answer)


BASE_TASKS: Mapping[str, tuple[float, Callable[[np.random.Generator], Example]]] = {
    "copy": (0.2, copy_words),
    "count_text": (0.35, count_text),
    "describe_text": (0.1, describe_text),
    "colour_text": (0.05, colour_text),
    "arithmetic": (0.3, arithmetic),
}


def base_text(rng: np.random.Generator) -> Example:
    """One of the base model's text skills, drawn with the BASE_TASKS weights."""
    names = list(BASE_TASKS)
    weights = np.array([BASE_TASKS[n][0] for n in names])
    return BASE_TASKS[names[int(rng.choice(len(names), p=weights / weights.sum()))]][1](rng)


def stage_sampler(
    stage: str, text_mix: float, cot_mix: float = 0.0, image_scale: int = 1
) -> Callable[[np.random.Generator], Example]:
    """The training distribution of a stage: its own task, with ``text_mix`` of base text mixed in.

    ``cot_mix`` is the base's share of text problems with their chain of thought: a little of the
    reasoner's format in pretraining, so that the reasoner's fine-tune elicits rather than teaches.
    ``image_scale``: the VLM's image layout (``images.draw``).
    """
    own: dict[str, Callable[[np.random.Generator], Example]] = {
        "base": base_text,
        "reasoner": lambda rng: reasoning(rng, visual=False),
        "vlm_align": lambda rng: vlm_data(rng, image_scale),
        "vlm": lambda rng: vlm_data(rng, image_scale),
    }
    if stage not in own:
        raise ValueError(f"unknown testbed stage {stage!r}; known: {', '.join(own)}")

    def sample(rng: np.random.Generator) -> Example:
        if stage == "base" and cot_mix and rng.random() < cot_mix:
            return reasoning(rng, visual=False)
        return base_text(rng) if stage != "base" and rng.random() < text_mix else own[stage](rng)

    return sample


# Each draws an item from (rng, image_scale). Drawing an image at scale > 1 takes more random numbers,
# so the visual tasks' items at scale 2 are another fixed draw than at scale 1, not the same scenes.
EVAL_TASKS: Mapping[str, Callable[[np.random.Generator, int], Example]] = {
    "perception": lambda rng, scale: perception(rng, colour_only=True, image_scale=scale),
    "text_reasoning": lambda rng, scale: reasoning(rng, visual=False),
    "visual_reasoning": lambda rng, scale: reasoning(rng, visual=True, image_scale=scale),
}
# Evaluated on another task's items with the answer opened by <think>, as R1-style chat templates do.
THINK_OPENED_TASKS: Mapping[str, str] = {"visual_reasoning_think": "visual_reasoning"}
EVAL_SEED = 20_250_516  # fixed, independent of the training seed, so every testbed is scored on the same items


def items_of(task: str) -> str:
    """The task whose items ``task`` is scored on (itself, or the plain task of a <think>-opened one)."""
    return THINK_OPENED_TASKS.get(task, task)


def eval_set(task: str, n: int, seed: int = EVAL_SEED, image_scale: int = 1) -> list[Example]:
    """The first ``n`` items of ``task``, images drawn at ``image_scale`` (the evaluated VLM's layout)."""
    task = items_of(task)
    rng = np.random.default_rng([seed, list(EVAL_TASKS).index(task)])
    return [EVAL_TASKS[task](rng, image_scale) for _ in range(n)]
