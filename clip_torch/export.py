"""ONNX export of clip_torch models (``clip-export MODEL OUT --to onnx``; clip_core.export runs it).

Each tower is traced through a small wrapper (``TextFeatures``, ``VisionFeatures``, ``FullModel``)
with torch's TorchScript-based exporter (``dynamo=False``: it needs neither onnxscript nor
torch.export, and its graphs run as fast in ONNX Runtime), opset 17, dynamic batch and sequence
axes. Inputs ``input_ids`` / ``attention_mask`` (int64) and ``pixel_values`` (float32); outputs in
float32 whatever the compute dtype. ``quantize="int8"`` writes the fp32 graphs and then
ONNX Runtime's dynamic quantisation of their MatMuls (int8 weights, activations quantised per
call), which is what runs fastest on CPUs with VNNI.

Python:
    >>> from clip_torch.export import export_onnx
    >>> export_onnx(model, "out/")  # = clip_core.export.export(model, "out/", to="onnx")
"""

from __future__ import annotations

import copy
import logging
import os
import warnings

import numpy as np
import torch
from torch import nn

import clip_core.export as core_export
from clip_core.encoder import dtype_name
from clip_core.export import ExportOptions
from clip_torch.modeling import CLIPModel

OPSET = 17
FILES = {"text": "text.onnx", "vision": "vision.onnx", "full": "full.onnx"}
TEXT_INPUTS = ("input_ids", "attention_mask")
IMAGE_INPUTS = ("pixel_values",)


class TextFeatures(nn.Module):
    """(input_ids, attention_mask) -> text_embeds (projected, float32) [, last_hidden_state]."""

    def __init__(self, model: CLIPModel, hidden_states: bool = False):
        super().__init__()
        self.text_model, self.text_projection = model.text_model, model.text_projection
        self.hidden_states = hidden_states

    def forward(self, input_ids, attention_mask):
        out = self.text_model(input_ids, attention_mask)
        embeds = self.text_projection(out.pooler_output).float()
        return (embeds, out.last_hidden_state.float()) if self.hidden_states else embeds


class VisionFeatures(nn.Module):
    """pixel_values -> image_embeds (projected, float32) [, last_hidden_state]."""

    def __init__(self, model: CLIPModel, hidden_states: bool = False):
        super().__init__()
        self.vision_model, self.visual_projection = model.vision_model, model.visual_projection
        self.hidden_states = hidden_states

    def forward(self, pixel_values):
        out = self.vision_model(pixel_values)
        embeds = self.visual_projection(out.pooler_output).float()
        return (embeds, out.last_hidden_state.float()) if self.hidden_states else embeds


class FullModel(nn.Module):
    """(input_ids, attention_mask, pixel_values) -> logits_per_image, logits_per_text, text_embeds,
    image_embeds (normalised), as CLIPModel's forward."""

    def __init__(self, model: CLIPModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, pixel_values):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        return tuple(
            x.float() for x in (out.logits_per_image, out.logits_per_text, out.text_embeds, out.image_embeds)
        )


def output_names(tower: str, hidden_states: bool) -> list[str]:
    if tower == "full":
        return list(core_export.FULL_OUTPUTS)
    names = ["text_embeds" if tower == "text" else "image_embeds"]
    return names + (["last_hidden_state"] if hidden_states else [])


def _wrapper(model: CLIPModel, tower: str, hidden_states: bool) -> tuple[nn.Module, tuple[str, ...]]:
    if tower == "text":
        return TextFeatures(model, hidden_states), TEXT_INPUTS
    if tower == "vision":
        return VisionFeatures(model, hidden_states), IMAGE_INPUTS
    return FullModel(model), TEXT_INPUTS + IMAGE_INPUTS


def _example_inputs(config) -> dict[str, torch.Tensor]:
    vision = config.vision_config
    length = min(8, config.text_config.max_position_embeddings)
    ids = torch.full((2, length), config.text_config.eos_token_id, dtype=torch.int64)
    ids[:, 0] = config.text_config.bos_token_id
    return {
        "input_ids": ids,
        "attention_mask": torch.ones((2, length), dtype=torch.int64),
        "pixel_values": torch.zeros((2, vision.num_channels, vision.image_size, vision.image_size)),
    }


def load_model(model) -> CLIPModel:
    """A float32 CLIPModel in eval mode: ``model`` itself, or loaded from a folder / Hub id."""
    if isinstance(model, (str, os.PathLike)):
        return CLIPModel.from_pretrained(model)
    if not isinstance(model, CLIPModel):
        raise TypeError(
            f"the ONNX export takes a clip_torch CLIPModel or a folder, got {type(model).__name__}"
        )
    return model


def export_tower(model: CLIPModel, tower: str, path: str, hidden_states: bool = False, opset: int = OPSET):
    """Trace one tower (or the full model) of ``model`` into the ONNX file ``path``."""
    wrapper, inputs = _wrapper(model, tower, hidden_states)
    outputs = output_names(tower, hidden_states)
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    dynamic["pixel_values"] = {0: "image_batch" if tower == "full" else "batch"}
    dynamic = {name: dynamic[name] for name in inputs}
    for name in outputs:  # every output's first axis follows its batch
        dynamic[name] = {0: "batch"} if tower != "full" else {}
    if tower == "full":
        dynamic.update(
            logits_per_image={0: "image_batch", 1: "batch"},
            logits_per_text={0: "batch", 1: "image_batch"},
            text_embeds={0: "batch"},
            image_embeds={0: "image_batch"},
        )
    example = _example_inputs(model.config)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            wrapper.eval(),
            tuple(example[name] for name in inputs),
            path,
            input_names=list(inputs),
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def quantize_int8(source: str, target: str) -> None:
    """ONNX Runtime's dynamic int8 quantisation of the MatMuls of ``source`` (signed int8 weights)."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise ImportError(
            f"int8 quantisation needs {e.name or e}; install it with: pip install 'clip-multibackend[onnx]'"
        ) from None
    logging.disable(logging.WARNING)  # its advice to pre-process the graph first, on the root logger
    try:
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        logging.disable(logging.NOTSET)


def export(model: CLIPModel, folder: str, options: ExportOptions) -> dict[str, str]:
    """Write the ONNX files of ``options.towers`` into ``folder``; {tower: file name}."""
    compute = getattr(torch, dtype_name(options.dtype))
    if compute != torch.float32:
        model = copy.deepcopy(model).to(compute)
    files = {}
    for tower in options.towers:
        name = FILES[tower]
        path = os.path.join(folder, name)
        if options.quantize:
            fp32 = os.path.join(folder, f".{name}.fp32")
            export_tower(model, tower, fp32, options.hidden_states)
            quantize_int8(fp32, path)
            os.remove(fp32)
        else:
            export_tower(model, tower, path, options.hidden_states)
        files[tower] = name
    return files


@torch.inference_mode()
def features(model: CLIPModel, tower: str, batch: dict, options: ExportOptions) -> dict[str, np.ndarray]:
    """What the source model gives for ``batch`` through its public methods (the check's reference)."""
    inputs = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}
    out = core_export.source_outputs(model, tower, inputs, options.hidden_states)
    return {k: v.float().numpy() for k, v in out.items()}


def runner(folder: str, options: ExportOptions):
    """(tower, batch) -> outputs of the exported files, run by ONNX Runtime."""
    from clip_core.onnx_engine import OnnxCLIP

    engine = OnnxCLIP(folder, towers=options.towers)
    return engine.run


def export_onnx(model, out, towers=None, dtype=None, quantize=None, hidden_states=False, overwrite=False):
    """``clip_core.export.export(model, out, to="onnx", ...)``: write, check, report."""
    return core_export.export(
        model,
        out,
        to="onnx",
        towers=towers,
        dtype=dtype,
        quantize=quantize,
        hidden_states=hidden_states,
        overwrite=overwrite,
        progress=False,
    )
