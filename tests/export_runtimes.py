"""Runs clip-export's artifacts with their plain runtimes, in a fresh process, without our package.

    python tests/export_runtimes.py JOBS.json INPUTS.npz OUTPUTS.npz

JOBS.json: [[format, folder], ...]. INPUTS.npz: input_ids, attention_mask, pixel_values.
OUTPUTS.npz: "format/tower/output" -> array, and "format/error" -> the message where a format
failed. The last key, "imported", lists every clip_* module this process imported (none, or the
test fails): what a deployment machine without our package can do, this script does.
"""

import json
import os
import sys
import traceback

import numpy as np

TOWER_INPUTS = {
    "text": ("input_ids", "attention_mask"),
    "vision": ("pixel_values",),
    "full": ("input_ids", "attention_mask", "pixel_values"),
}


def run_onnx(folder, inputs):
    import onnxruntime as ort

    out = {}
    for tower in TOWER_INPUTS:
        path = os.path.join(folder, f"{tower}.onnx")
        if os.path.exists(path):
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            feeds = {name: inputs[name] for name in TOWER_INPUTS[tower]}
            out.update({f"{tower}/{n}": v for n, v in zip(names, session.run(names, feeds))})
    return out


def run_savedmodel(folder, inputs):
    import tensorflow as tf

    loaded = tf.saved_model.load(os.path.join(folder, "1"))
    signatures = {"text": "get_text_features", "vision": "get_image_features", "full": "serving_default"}
    out = {}
    for tower, name in signatures.items():
        if name in loaded.signatures:
            feeds = {k: tf.constant(inputs[k]) for k in TOWER_INPUTS[tower]}
            out.update({f"{tower}/{k}": v.numpy() for k, v in loaded.signatures[name](**feeds).items()})
    return out


def run_tflite(folder, inputs):
    from ai_edge_litert.interpreter import Interpreter

    out = {}
    for tower in ("text", "vision"):
        path = os.path.join(folder, f"{tower}.tflite")
        if os.path.exists(path):
            runner = Interpreter(model_path=path).get_signature_runner()
            result = runner(**{k: inputs[k] for k in TOWER_INPUTS[tower]})
            out.update({f"{tower}/{k}": np.array(v) for k, v in result.items()})
    return out


def run_jax(folder, inputs):
    import jax

    params = dict(np.load(os.path.join(folder, "params.npz")))
    out = {}
    for tower in TOWER_INPUTS:
        path = os.path.join(folder, f"{tower}.jax")
        if os.path.exists(path):
            with open(path, "rb") as f:
                exported = jax.export.deserialize(bytearray(f.read()))
            args = [
                inputs[k].astype(np.int32) if k != "pixel_values" else inputs[k] for k in TOWER_INPUTS[tower]
            ]
            out.update({f"{tower}/{k}": np.asarray(v) for k, v in exported.call(params, *args).items()})
    return out


RUNNERS = {"onnx": run_onnx, "savedmodel": run_savedmodel, "tflite": run_tflite, "jax": run_jax}


def main(jobs_path, inputs_path, outputs_path):
    with open(jobs_path) as f:
        jobs = json.load(f)
    inputs = dict(np.load(inputs_path))
    results = {}
    for fmt, folder in jobs:
        try:
            results.update({f"{fmt}/{k}": v for k, v in RUNNERS[fmt](folder, inputs).items()})
        except Exception:
            results[f"{fmt}/error"] = np.array(traceback.format_exc())
    results["imported"] = np.array(sorted(m for m in sys.modules if m.split(".")[0].startswith("clip_")))
    np.savez(outputs_path, **results)


if __name__ == "__main__":
    main(*sys.argv[1:4])
