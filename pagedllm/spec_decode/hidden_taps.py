"""Taps on a target model's layers for EAGLE-3: the input of each chosen decoder layer (the
residual stream after the layers before it) copied into one persistent buffer every forward.

The copies run as forward pre-hooks of the layers, so they are part of whatever runs the forward:
eager, or captured into the CUDA graphs (the buffer's address is fixed, and each replay writes it).
Row t of the buffer is the step's token t; a padded graph step writes its padding rows too.
"""
from __future__ import annotations

import torch

from pagedllm.models.common import DecoderForCausalLM


def tap_layer_inputs(model: DecoderForCausalLM, layer_ids: tuple[int, ...], max_tokens: int) -> torch.Tensor:
    """Install the taps; returns the buffer [max_tokens, len(layer_ids) * H] they write."""
    layers = model.model.layers
    for i in layer_ids:
        if not 0 <= i < len(layers):
            raise ValueError(f"EAGLE-3 reads the target's layer {i}, which has only {len(layers)} layers.")
    h = model.config.hidden_size
    weight = next(model.parameters())
    buffer = torch.zeros(max_tokens, len(layer_ids) * h, dtype=model.dtype, device=weight.device)
    for j, i in enumerate(layer_ids):
        columns = buffer[:, j * h:(j + 1) * h]

        def copy_input(module: torch.nn.Module, args: tuple, columns: torch.Tensor = columns) -> None:
            hidden = args[1]  # DecoderLayer.forward(positions, hidden)
            columns[: hidden.shape[0]].copy_(hidden)

        layers[i].register_forward_pre_hook(copy_input)
    return buffer
