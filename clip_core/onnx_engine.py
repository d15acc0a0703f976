"""CLIP on ONNX Runtime, framework-free: the ONNX files ``clip-export --to onnx`` writes, run on numpy.

``OnnxCLIP(folder)`` opens ``text.onnx`` / ``vision.onnx`` (and ``full.onnx``) of an export folder
with ONNX Runtime's CPU provider (or the providers given) and offers ``get_text_features`` /
``get_image_features`` as CLIPModel does (projected, not normalised, float32 numpy).
``OnnxEncoder`` is the encoder protocol (clip_core.encoder) on it: ``load_encoder(folder, "onnx")``
takes an export folder, or a checkpoint folder that it exports first (that needs torch).

Threads: one intra-op pool as large as the cores this process may use, no inter-op pool, and no
spinning (``session.intra_op.allow_spinning=0``): spinning threads would keep the cores busy between
calls and slow whatever runs next (the image processor, another model).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from clip_core.config import CLIPConfig
from clip_core.encoder import dtype_name, l2_normalize
from clip_core.export import MANIFEST, export, read_manifest

FILES = {"text": "text.onnx", "vision": "vision.onnx", "full": "full.onnx"}
INPUT_DTYPES = {"input_ids": np.int64, "attention_mask": np.int64, "pixel_values": np.float32}


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "the ONNX engine needs onnxruntime; install it with: pip install 'clip-multibackend[onnx]'"
        ) from None
    return onnxruntime


def default_threads() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def session_options(threads: int | None = None):
    """ONNX Runtime session options: all graph optimisations, one pool of ``threads``, no spinning."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


class OnnxCLIP:
    """The ONNX files of an export folder, run by ONNX Runtime on numpy.

    Args:
        folder: a ``clip-export --to onnx`` folder (``config.json`` and the .onnx files).
        towers: which of "text", "vision", "full" to open (default: every file present).
        threads: intra-op threads (default: the cores this process may use).
        providers: ONNX Runtime execution providers (default: CPU).

    Example:
        >>> clip = OnnxCLIP("clip-onnx/")
        >>> image_features = clip.get_image_features(processor(images=images)["pixel_values"])
    """

    def __init__(self, folder, towers=None, threads: int | None = None, providers=None):
        ort = _onnxruntime()
        self.folder = os.fspath(folder)
        self.config = CLIPConfig.from_pretrained(self.folder)
        manifest = os.path.join(self.folder, MANIFEST)
        self.logit_scale = read_manifest(self.folder).get("logit_scale") if os.path.isfile(manifest) else None
        towers = towers or [t for t, name in FILES.items() if os.path.isfile(os.path.join(self.folder, name))]
        if not towers:
            raise FileNotFoundError(f"{self.folder} holds no {', '.join(FILES.values())}")
        options = session_options(threads)
        self.sessions = {}
        for tower in towers:
            path = os.path.join(self.folder, FILES[tower])
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path} does not exist: export the {tower} tower (--towers {tower})")
            self.sessions[tower] = ort.InferenceSession(
                path, options, providers=providers or ["CPUExecutionProvider"]
            )

    def run(self, tower: str, inputs: dict) -> dict[str, np.ndarray]:
        """Every output of ``tower`` ("text", "vision", "full") for numpy ``inputs``, by name."""
        if tower not in self.sessions:
            raise ValueError(f"this OnnxCLIP has no {tower} model (it has {', '.join(self.sessions)})")
        session = self.sessions[tower]
        feeds = {
            i.name: np.ascontiguousarray(inputs[i.name], INPUT_DTYPES.get(i.name))
            for i in session.get_inputs()
        }
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))

    def get_text_features(self, input_ids, attention_mask=None) -> np.ndarray:
        """(B, T) ids (and mask) -> (B, projection_dim) float32, as CLIPModel.get_text_features."""
        ids = np.asarray(input_ids)
        mask = np.ones_like(ids) if attention_mask is None else attention_mask
        return self.run("text", {"input_ids": ids, "attention_mask": mask})["text_embeds"]

    def get_image_features(self, pixel_values) -> np.ndarray:
        """(B, 3, H, W) float32 -> (B, projection_dim) float32, as CLIPModel.get_image_features."""
        return self.run("vision", {"pixel_values": pixel_values})["image_embeds"]


class OnnxEncoder:
    """The encoder protocol on OnnxCLIP: normalised float32 embeddings.

    ``OnnxEncoder.from_pretrained(path)``: an export folder as it is; a checkpoint folder (or Hub id)
    is exported first into a temporary folder (fp32 unless ``dtype``; needs torch).
    """

    def __init__(self, model, dtype=None):
        if not isinstance(model, OnnxCLIP):  # a clip_torch CLIPModel: export it first
            model = _exported(model, dtype)
        self.model = model
        self.config = model.config

    @classmethod
    def from_pretrained(cls, path, dtype=None) -> OnnxEncoder:
        if os.path.isfile(os.path.join(os.fspath(path), MANIFEST)):
            exported = read_manifest(path, "onnx")
            if dtype is not None and dtype_name(dtype) != dtype_name(exported["dtype"]):
                raise ValueError(f"{path} was exported in {exported['dtype']}, not {dtype}: export it again")
            return cls(OnnxCLIP(path, towers=["text", "vision"]))
        return cls(_exported(path, dtype))

    @property
    def logit_scale(self) -> float | None:
        return self.model.logit_scale

    def encode_images(self, pixel_values: np.ndarray) -> np.ndarray:
        return l2_normalize(self.model.get_image_features(pixel_values))

    def encode_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        return l2_normalize(self.model.get_text_features(input_ids, attention_mask))


def _exported(model, dtype) -> OnnxCLIP:
    """An OnnxCLIP of ``model`` (a folder or a clip_torch CLIPModel) exported to a temporary folder.
    The sessions hold the graphs in memory, so the folder can go once they are open."""
    with tempfile.TemporaryDirectory(prefix="clip-onnx-") as tmp:
        export(model, os.path.join(tmp, "onnx"), to="onnx", dtype=dtype, progress=False)
        return OnnxCLIP(os.path.join(tmp, "onnx"))
