"""Deployment exports: one entry for every format, the options each can express, the check on the
spot, and what int8 costs in accuracy.

    export(model, out, to="onnx", towers=None, dtype=None, quantize=None, hidden_states=False,
           overwrite=False, progress=True) -> ExportReport

| ``to``       | code                | what OUT holds                                         | runs with        |
|--------------|---------------------|--------------------------------------------------------|------------------|
| onnx         | clip_torch.export   | ``text.onnx``, ``vision.onnx`` (``full.onnx``)         | onnxruntime      |
| savedmodel   | clip_tf.export      | ``1/`` (TF Serving's layout): signatures               | tensorflow       |
|              |                     | get_text_features, get_image_features, serving_default |                  |
| tflite       | clip_tf.export      | ``text.tflite``, ``vision.tflite``                     | ai-edge-litert   |
| jax          | clip_flax.export    | ``text.jax`` + ``text.npz``, ``vision.jax`` + ...      | jax              |

Every artifact takes ``input_ids`` / ``attention_mask`` (int64, ``(batch, sequence)``, both dynamic)
or ``pixel_values`` (float32, ``(batch, 3, H, W)``, dynamic batch) and gives float32
``text_embeds`` / ``image_embeds``: the projected features, as ``get_text_features`` /
``get_image_features`` (not normalised), plus ``last_hidden_state`` with ``hidden_states=True``.
The ``full`` model gives ``logits_per_image``, ``logits_per_text`` and the normalised embeddings.
OUT also holds ``config.json``, the source's tokenizer and preprocessor files and
``clip_export.json`` (the options, the files and the check's figures).

Every export is run on the spot against the source model on a probe (coloured shapes drawn at the
model's image size and their captions) at two batch sizes and two sequence lengths: fp32 must match
within 1e-5 (TFLite 1e-4) in max abs difference; fp16 / bf16 within a cosine of 0.999 / 0.99 per
row of the fp32 source; int8 is measured, not judged: cosine to the fp32 features and zero-shot
agreement (the fraction of probe images whose best caption is the same).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from clip_core.conversion import PREPROCESSOR_FILE, TOKENIZER_FILES
from clip_core.files import atomic_folder, atomic_write_text
from clip_core.probe import Probe, make_probe

MANIFEST = "clip_export.json"
TOWERS = ("text", "vision", "full")
DTYPES = ("fp32", "fp16", "bf16")
# Reduced precision is checked against the fp32 source by the cosine of each output row.
MIN_COSINE = {"fp16": 0.999, "bf16": 0.99}


class ExportError(ValueError):
    """An option the format cannot express, or an export that does not match its source."""


@dataclasses.dataclass(frozen=True)
class FormatSpec:
    module: str  # the backend module with load_model / export / features / runner
    extra: str  # the pip extra that provides what it needs
    towers: tuple[str, ...]
    default_towers: tuple[str, ...]
    dtypes: tuple[str, ...]
    quantize: tuple[str, ...]
    tolerance: float  # max abs difference allowed in fp32
    limits: str  # why an option is missing, for the error message


FORMATS = {
    "onnx": FormatSpec(
        "clip_torch.export",
        "onnx",
        TOWERS,
        ("text", "vision"),
        ("fp32", "fp16"),
        ("int8",),
        1e-5,
        "ONNX Runtime has no bfloat16 kernels for these ops on CPU",
    ),
    "savedmodel": FormatSpec(
        "clip_tf.export",
        "tf",
        TOWERS,
        TOWERS,
        DTYPES,
        (),
        1e-5,
        "a SavedModel keeps the model's own dtype; quantise through --to tflite or --to onnx",
    ),
    "tflite": FormatSpec(
        "clip_tf.export",
        "tflite",
        ("text", "vision"),
        ("text", "vision"),
        ("fp32", "fp16"),
        ("int8",),
        1e-4,
        "TFLite has no bfloat16 tensors (fp16 stores float16 weights); towers only, one file each",
    ),
    "jax": FormatSpec(
        "clip_flax.export",
        "flax",
        TOWERS,
        ("text", "vision"),
        DTYPES,
        (),
        1e-5,
        "jax.export keeps the computation as it is; quantise through --to onnx or --to tflite",
    ),
}


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    to: str
    towers: tuple[str, ...]
    dtype: str = "fp32"
    quantize: str | None = None
    hidden_states: bool = False

    @property
    def spec(self) -> FormatSpec:
        return FORMATS[self.to]


def export_options(to: str, towers=None, dtype=None, quantize=None, hidden_states=False) -> ExportOptions:
    """Checked options; an option the format cannot express is an ExportError naming it and why."""
    if to not in FORMATS:
        raise ExportError(f"unknown export format {to!r}: choose one of {', '.join(FORMATS)}")
    spec = FORMATS[to]
    if towers is None:
        towers = spec.default_towers
    elif isinstance(towers, str):
        towers = tuple(t.strip() for t in towers.split(",") if t.strip())
    towers = tuple(dict.fromkeys(towers))
    unknown = [t for t in towers if t not in TOWERS]
    if unknown or not towers:
        raise ExportError(f"--towers {','.join(towers)!r}: choose from text, vision, full (comma-separated)")
    dtype = dtype or "fp32"
    problems = []
    if dtype not in DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if dtype not in spec.dtypes:
        problems.append(f"--dtype {dtype} (available: {', '.join(spec.dtypes)})")
    if [t for t in towers if t not in spec.towers]:
        problems.append(f"--towers {','.join(towers)} (available: {', '.join(spec.towers)})")
    if quantize is not None:
        if quantize != "int8":
            raise ExportError(f"unknown quantisation {quantize!r}: the one available is int8")
        if quantize not in spec.quantize:
            problems.append("--quantize int8 (formats that quantise: onnx, tflite)")
        elif dtype != "fp32":
            problems.append("--quantize int8 with --dtype other than fp32 (int8 quantises fp32 weights)")
    if problems:
        raise ExportError(f"--to {to} cannot express {'; '.join(problems)}: {spec.limits}")
    return ExportOptions(to, towers, dtype, quantize, bool(hidden_states))


def backend_module(options: ExportOptions):
    """The backend module that writes ``options.to``, imported now (a clear error names the extra)."""
    spec = options.spec
    try:
        return importlib.import_module(spec.module)
    except ImportError as e:
        raise ImportError(
            f"--to {options.to} needs {e.name or e}; install it with: pip install 'clip-multibackend[{spec.extra}]'"
        ) from None


def check_batches(probe: Probe, config, towers: Sequence[str], chunk: int = 16) -> dict[str, list[dict]]:
    """The inputs each artifact is checked on: one probe image, then every probe image ``chunk`` at
    a time (the batches zero-shot uses) and texts at two lengths: the captions padded to the longest (the first batch, the one
    zero-shot uses), then three of them padded to the context length."""
    ids, mask = probe.input_ids, probe.attention_mask
    full_length = config.text_config.max_position_embeddings
    pad = full_length - ids.shape[1]
    eos = ids[:3, -1:]
    long_ids = np.concatenate([ids[:3], np.repeat(eos, pad, axis=1)], axis=1)
    long_mask = np.concatenate([mask[:3], np.zeros((3, pad), mask.dtype)], axis=1)
    texts = [{"input_ids": ids, "attention_mask": mask}, {"input_ids": long_ids, "attention_mask": long_mask}]
    pixels = probe.pixel_values
    images = [{"pixel_values": pixels[:1]}]  # then all of them, ``chunk`` at a time (two shapes)
    images += [{"pixel_values": pixels[i : i + chunk]} for i in range(0, len(pixels), chunk)]
    batches = {"text": texts, "vision": images}
    batches["full"] = [{**texts[0], **images[1]}, {**texts[-1], **images[0]}]
    return {t: batches[t] for t in towers}


# ---------------------------------------------------------------------------------------------
# Comparing an export with its source


FULL_OUTPUTS = ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds")


def source_outputs(model, tower: str, inputs: dict, hidden_states: bool = False) -> dict:
    """What a CLIPModel gives for ``inputs`` (its framework's tensors) through its public methods:
    the reference an export of ``tower`` is checked against (torch and TF spell them alike)."""
    if tower == "full":
        out = model(**inputs)
        return {name: getattr(out, name) for name in FULL_OUTPUTS}
    if tower == "text":
        out = {"text_embeds": model.get_text_features(**inputs)}
        if hidden_states:
            out["last_hidden_state"] = model.text_model(**inputs).last_hidden_state
    else:
        out = {"image_embeds": model.get_image_features(**inputs)}
        if hidden_states:
            out["last_hidden_state"] = model.vision_model(**inputs).last_hidden_state
    return out


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row (sample) of a and b, flattened past the first axis."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)


def run_all(fn: Callable[[str, dict], dict], batches: dict[str, list[dict]]) -> dict[str, np.ndarray]:
    """{"tower/output": outputs of every batch} (concatenated where batches stack, else a list)."""
    out: dict[str, list] = {}
    for tower, items in batches.items():
        for batch in items:
            for name, value in fn(tower, batch).items():
                out.setdefault(f"{tower}/{name}", []).append(np.asarray(value, np.float32))
    return out


def compare(reference: dict, exported: dict, options: ExportOptions) -> dict[str, dict]:
    """Per output: max abs difference, smallest row cosine and whether it passes."""
    checks = {}
    for name, refs in reference.items():
        if name not in exported:
            raise ExportError(f"the export gives no {name}")
        diffs, cosines = [], []
        for ref, got in zip(refs, exported[name]):
            if ref.shape != got.shape:
                raise ExportError(f"{name}: the export gives shape {got.shape}, the source {ref.shape}")
            diffs.append(float(np.abs(ref - got).max()))
            cosines.append(float(row_cosines(ref, got).min()))
        result = {"max_abs_diff": max(diffs), "min_cosine": min(cosines)}
        if options.quantize:
            result["passed"] = None  # measured, not judged
        elif options.dtype == "fp32":
            result["tolerance"] = options.spec.tolerance
            result["passed"] = result["max_abs_diff"] <= options.spec.tolerance
        else:
            result["min_cosine_required"] = MIN_COSINE[options.dtype]
            result["passed"] = result["min_cosine"] >= MIN_COSINE[options.dtype]
        checks[name] = result
    return checks


def zero_shot(image_features: np.ndarray, text_features: np.ndarray) -> np.ndarray:
    """The best caption's index for each image (cosine similarity)."""
    images = image_features / np.linalg.norm(image_features, axis=-1, keepdims=True)
    texts = text_features / np.linalg.norm(text_features, axis=-1, keepdims=True)
    return np.argmax(images @ texts.T, axis=-1)


def quantization_report(reference: dict, exported: dict, probe: Probe) -> dict:
    """Accuracy cost of a quantised export on the probe: cosine of its features to the fp32 source's
    (mean and worst row), zero-shot agreement with the source (the same best caption for an image),
    and both zero-shot accuracies on the drawn shapes (meaningful for a model that learned them)."""

    def pick(results: dict, key: str):  # every probe image, or the captions (the first text batch)
        values = results.get(key)
        if values is None:
            return None
        return values[0] if key.startswith("text/") else np.concatenate(values[1:])

    report = {}
    for key, label in (("text/text_embeds", "text"), ("vision/image_embeds", "image")):
        if key in exported:
            cosines = row_cosines(pick(reference, key), pick(exported, key))
            report[f"{label}_cosine_mean"] = float(cosines.mean())
            report[f"{label}_cosine_min"] = float(cosines.min())
    images, captions = pick(reference, "vision/image_embeds"), pick(reference, "text/text_embeds")
    if images is not None and captions is not None:
        best = zero_shot(images, captions)
        best_q = zero_shot(pick(exported, "vision/image_embeds"), pick(exported, "text/text_embeds"))
        report["zero_shot_agreement"] = float((best == best_q).mean())
        report["zero_shot_accuracy_fp32"] = float((best == probe.labels).mean())
        report["zero_shot_accuracy_int8"] = float((best_q == probe.labels).mean())
        report["probe_images"] = len(probe.labels)
    return report


# ---------------------------------------------------------------------------------------------
# The export itself


@dataclasses.dataclass
class ExportReport:
    out: str
    options: ExportOptions
    files: dict[str, str]  # artifact -> path relative to out
    checks: dict[str, dict]
    quantization: dict | None
    seconds: float

    def to_dict(self) -> dict:
        return {
            "format": self.options.to,
            "towers": list(self.options.towers),
            "dtype": self.options.dtype,
            "quantize": self.options.quantize,
            "hidden_states": self.options.hidden_states,
            "files": self.files,
            "checks": self.checks,
            "quantization": self.quantization,
        }

    def __str__(self) -> str:
        o = self.options
        what = f"{o.dtype}{f' {o.quantize}' if o.quantize else ''}"
        lines = [f"exported {'+'.join(o.towers)} as {o.to} ({what}) to {self.out} in {self.seconds:.1f}s"]
        lines += [f"  {artifact}: {path}" for artifact, path in self.files.items()]
        for name, c in self.checks.items():
            verdict = {True: "ok", False: "FAILED", None: "measured"}[c["passed"]]
            limit = (
                f" (<= {c['tolerance']:g})"
                if "tolerance" in c
                else f" (cosine >= {c['min_cosine_required']})"
                if "min_cosine_required" in c
                else ""
            )
            lines.append(
                f"  check {name}: max abs diff {c['max_abs_diff']:.3g}, min cosine "
                f"{c['min_cosine']:.6f}{limit} {verdict}"
            )
        if self.quantization:
            q = self.quantization
            parts = [f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in q.items()]
            lines.append("  int8 accuracy on the shapes probe: " + ", ".join(parts))
        return "\n".join(lines)


def _progress(total: int, progress):
    if progress is False or progress is None or (progress != "always" and not sys.stderr.isatty()):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="step", desc="exporting", file=sys.stderr)


def _copy_processing_files(source, folder: str) -> None:
    if not isinstance(source, (str, os.PathLike)) or not os.path.isdir(source):
        return
    for name in (*TOKENIZER_FILES, PREPROCESSOR_FILE):
        path = os.path.join(source, name)
        if os.path.isfile(path):
            shutil.copyfile(path, os.path.join(folder, name))


def _model_tokenizer(folder: str, config):
    """The model's own tokenizer from the files copied into ``folder``, if they are there and fit its
    vocabulary (the probe's captions then mean what they say to a model trained on them); else None."""
    if not all(os.path.isfile(os.path.join(folder, name)) for name in ("vocab.json", "merges.txt")):
        return None
    from clip_core.tokenization import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder)
    return tokenizer if len(tokenizer) <= config.text_config.vocab_size else None


def export(
    model,
    out: str | os.PathLike,
    to: str = "onnx",
    towers=None,
    dtype: str | None = None,
    quantize: str | None = None,
    hidden_states: bool = False,
    overwrite: bool = False,
    progress=True,
) -> ExportReport:
    """Export ``model`` (a checkpoint folder, a cached Hub id, or a loaded CLIPModel of the format's
    backend) to the folder ``out``; see the module docstring. The folder appears only once the
    export has been written and checked; a failed check is an ExportError and leaves nothing.

    towers: "text", "vision", "full" or a comma-separated mix (default: the format's usual set).
    dtype: "fp32" (default), "fp16" or "bf16" where the format has it. quantize: None or "int8".
    progress: True shows a bar on a terminal, "always" everywhere, False never.
    """
    start = time.perf_counter()
    options = export_options(to, towers, dtype, quantize, hidden_states)
    out = os.path.abspath(os.fspath(out))
    backend = backend_module(options)
    bar = _progress(4, progress)

    def step(what: str) -> None:
        if bar is not None:
            bar.set_description(what)
            bar.update(1)

    try:
        with atomic_folder(out, overwrite) as folder:
            source = backend.load_model(model)
            step("exporting")
            files = backend.export(source, folder, options)
            step("checking")
            config = source.config
            config.save_pretrained(folder)
            _copy_processing_files(model, folder)
            probe = make_probe(config, tokenizer=_model_tokenizer(folder, config))
            batches = check_batches(probe, config, options.towers)
            reference = run_all(lambda tower, batch: backend.features(source, tower, batch, options), batches)
            run = backend.runner(folder, options)
            exported = run_all(run, batches)
            del run
            checks = compare(reference, exported, options)
            step("measuring")
            quantization = quantization_report(reference, exported, probe) if options.quantize else None
            report = ExportReport(out, options, files, checks, quantization, time.perf_counter() - start)
            manifest = {**report.to_dict(), "logit_scale": logit_scale(source)}
            atomic_write_text(os.path.join(folder, MANIFEST), json.dumps(manifest, indent=2) + "\n")
            failed = [n for n, c in checks.items() if c["passed"] is False]
            if failed:
                raise ExportError(f"the {to} export does not match its source:\n{report}")
            step("done")
    finally:
        if bar is not None:
            bar.close()
    report.seconds = time.perf_counter() - start
    return report


def logit_scale(model) -> float | None:
    """exp(logit_scale) of a CLIPModel of any backend (None for a tower)."""
    value = getattr(model, "logit_scale", None)
    if value is None and isinstance(getattr(model, "params", None), dict):
        value = model.params.get("logit_scale")
    if value is None:
        return None
    if hasattr(value, "detach"):
        value = value.detach()
    return float(np.exp(np.asarray(value, np.float32)))


def read_manifest(folder: str | os.PathLike, to: str | None = None) -> dict:
    """The clip_export.json of an export folder (checked to be of format ``to`` when given)."""
    path = os.path.join(os.fspath(folder), MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder} is not a clip-export folder (no {MANIFEST})")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if to is not None and manifest.get("format") != to:
        raise ExportError(f"{folder} holds a {manifest.get('format')} export, not {to}")
    return manifest
