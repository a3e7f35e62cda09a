"""Per-layer visual-attention mass of a few query rows, measured inside the text decoder's SDPA call.

One attention function is registered with transformers' ``AttentionInterface`` and set on the
text decoder only. It lets SDPA compute the layer's output as usual and, for the selected query
rows alone, recomputes ``softmax(q_sel Kᵀ · scaling + mask)`` in float32 to add up the mass those
rows put on visual and on text key positions. The extra work is O(rows × sequence) per layer and
nothing is kept but per-head sums, so neither eager attention nor full attention matrices are
needed. The vision tower's attention layers are never probed: only the modules found in
``model.get_decoder().layers`` are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from frankmerge.analysis.errors import ProfileError

PROBE_IMPLEMENTATION = "frankmerge_probe"

_ACTIVE: AttentionProbe | None = None


@dataclass(frozen=True)
class ProbeTarget:
    """What one forward pass (or one ``generate`` call) measures.

    ``query_positions`` are absolute prompt positions whose rows count during the prefill; ``None``
    means the rows of the decoding steps instead (each newly generated token as a query).
    """

    visual: torch.Tensor  # bool (prompt_len,): key positions that hold image tokens
    query_positions: torch.Tensor | None
    exclude_sink: bool


@dataclass(frozen=True)
class ProbeSums:
    """Attention mass summed over the query rows of one input: per layer and query head."""

    visual: torch.Tensor  # float64 (layers, heads)
    text: torch.Tensor  # float64 (layers, heads)
    rows: int  # query rows seen per layer

    def ratios(self) -> torch.Tensor:
        """a_l of this input: per head Attn_vis / (Attn_vis + Attn_text), then the mean over heads."""
        return (self.visual / (self.visual + self.text)).mean(dim=1)


def probe_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA attention, plus the probe's row sums when ``module`` is a probed text-decoder layer."""
    probe = _ACTIVE
    if probe is not None:
        layer = probe.layer_of.get(id(module))
        if layer is not None:
            probe.observe(layer, module, query, key, attention_mask, kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def register_probe() -> None:
    """Make the probe selectable by name; masks are built exactly as for SDPA."""
    AttentionInterface.register(PROBE_IMPLEMENTATION, probe_attention_forward)
    AttentionMaskInterface.register(PROBE_IMPLEMENTATION, sdpa_mask)


class AttentionProbe:
    """Installs the probe on a VLM's text decoder and collects per-layer sums for one input at a time."""

    def __init__(self, model: PreTrainedModel) -> None:
        decoder = model.get_decoder()
        layers = getattr(decoder, "layers", None)
        if layers is None or not all(hasattr(layer, "self_attn") for layer in layers):
            raise ProfileError(f"{type(model).__name__}: cannot find the text decoder's self-attention layers to probe")
        self.layer_of = {id(layer.self_attn): index for index, layer in enumerate(layers)}
        self.num_layers = len(layers)
        self._model = model
        self._target: ProbeTarget | None = None
        self._visual: list[torch.Tensor | None] = []
        self._text: list[torch.Tensor | None] = []
        self._rows: list[int] = []

    def install(self) -> None:
        """Switch the text decoder (and only it) to the probe; the vision tower keeps its attention."""
        register_probe()
        config = self._model.config
        text = config.get_text_config()
        key = next((k for k in config.sub_configs if getattr(config, k, None) is text), None)
        if key is None:
            raise ProfileError(f"{config.model_type}: no text sub-config found; is this a vision-language model?")
        self._model.set_attn_implementation({key: PROBE_IMPLEMENTATION})
        if text._attn_implementation != PROBE_IMPLEMENTATION:
            raise ProfileError(f"{config.model_type}: transformers refused a custom attention function for the text decoder")

    @contextmanager
    def measure(self, target: ProbeTarget) -> Iterator[None]:
        """Collect sums while the body runs the model on one input (batch size 1)."""
        global _ACTIVE
        if _ACTIVE is not None:
            raise RuntimeError("another attention probe is already measuring")
        self._target = target
        self._visual = [None] * self.num_layers
        self._text = [None] * self.num_layers
        self._rows = [0] * self.num_layers
        _ACTIVE = self
        try:
            yield
        finally:
            _ACTIVE = None

    def sums(self) -> ProbeSums:
        """The sums of the last ``measure`` block; every decoder layer must have seen query rows."""
        missing = [i for i, v in enumerate(self._visual) if v is None]
        if missing:
            raise ProfileError(
                f"decoder layers {missing[:5]} saw no query rows: the model did not call its attention "
                "function there, or no query position was selected"
            )
        visual = torch.stack([v.detach().to("cpu", torch.float64) for v in self._visual])  # type: ignore[union-attr]
        text = torch.stack([t.detach().to("cpu", torch.float64) for t in self._text])  # type: ignore[union-attr]
        return ProbeSums(visual, text, self._rows[0])

    def observe(
        self,
        layer: int,
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        attention_mask: torch.Tensor | None,
        kwargs: dict[str, Any],
    ) -> None:
        """Add the selected rows' visual and text attention mass to layer ``layer``'s per-head sums."""
        target = self._target
        assert target is not None
        q_len, kv_len = query.shape[2], key.shape[2]
        offset = kv_len - q_len  # absolute position of query row 0 (a dynamic cache precedes it)
        prompt_len = target.visual.numel()
        if target.query_positions is None:
            if q_len != 1 or offset < prompt_len:
                return  # prefill of a generate call: only decoding steps count
            rows = torch.zeros(1, dtype=torch.long, device=query.device)
        else:
            if offset != 0:
                return
            rows = target.query_positions.to(query.device)
        probs = _row_probabilities(module, query, key, attention_mask, rows, kwargs)
        visual = torch.zeros(kv_len, dtype=torch.bool, device=query.device)
        visual[:prompt_len] = target.visual.to(query.device)
        text = ~visual
        if target.exclude_sink:
            text[0] = False
            visual[0] = False
        mass_visual = (probs @ visual.to(probs.dtype)).sum(dim=(0, 2))  # (heads,)
        mass_text = (probs @ text.to(probs.dtype)).sum(dim=(0, 2))
        if self._visual[layer] is None:
            self._visual[layer], self._text[layer] = mass_visual, mass_text
        else:
            self._visual[layer] += mass_visual  # type: ignore[operator]
            self._text[layer] += mass_text  # type: ignore[operator]
        self._rows[layer] += rows.numel() * query.shape[0]


def _row_probabilities(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    rows: torch.Tensor,
    kwargs: dict[str, Any],
) -> torch.Tensor:
    """softmax over keys for the selected query rows, (batch, heads, rows, kv), as SDPA computes it."""
    if kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None:
        raise ProfileError(f"{type(module).__name__}: attention with softcap or position bias is not supported by the probe")
    q = query[:, :, rows, :].float()
    k = key.float()
    batch, heads, n_rows, dim = q.shape
    kv_heads, kv_len = k.shape[1], k.shape[2]
    # Query head h reads kv head h // n_rep (transformers' repeat_kv order), so grouping the query
    # heads per kv head avoids materialising repeated keys.
    n_rep = heads // kv_heads
    scores = torch.matmul(q.reshape(batch, kv_heads, n_rep * n_rows, dim), k.transpose(-1, -2))
    scaling = kwargs.get("scaling")
    scores = scores.reshape(batch, heads, n_rows, kv_len) * (dim**-0.5 if scaling is None else scaling)
    if attention_mask is not None:
        mask = attention_mask[:, :, rows, :kv_len]
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    else:
        # SDPA runs is_causal (upper-left aligned) only when there is no mask and more than one query.
        is_causal = kwargs.get("is_causal")
        causal = query.shape[2] > 1 and (is_causal if is_causal is not None else getattr(module, "is_causal", True))
        if causal:
            allowed = torch.arange(kv_len, device=rows.device)[None, :] <= rows[:, None]
            scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1)
