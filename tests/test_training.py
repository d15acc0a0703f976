"""clip_flax.training, clip_flax.data and clip_flax.cli (clip-finetune-flax).

The sharded-step check runs tests/training_sharded_step.py (as a module) in a subprocess with 8 simulated CPU
devices (JAX fixes the device count when it starts). The rest use a one-layer "micro" CLIP so that
compilation stays short.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

jax = pytest.importorskip("jax")
pytest.importorskip("optax")

import jax.numpy as jnp  # noqa: E402

from clip_flax import FlaxCLIPModel  # noqa: E402
from clip_flax import data as D  # noqa: E402
from clip_flax import training as T  # noqa: E402
from tests.tiny_configs import clip_batch, clip_config  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _model(params=None):
    model = FlaxCLIPModel(clip_config("micro"), _do_init=False)
    model.params = T.init_params(clip_config("micro"), seed=0) if params is None else params
    return model


@pytest.fixture(scope="module")
def micro_model():
    return _model()


@pytest.fixture(scope="module")
def batch():
    return clip_batch(clip_config("micro"), 16, seed=1)


def _one_step(model, batch, **cfg):
    trainer = T.Trainer(
        model, T.TrainConfig(**{"learning_rate": 1e-3, "total_steps": 10, **cfg}), donate=False
    )
    state = trainer.init_state()
    new_state, metrics = trainer.step(state, batch)
    return jax.device_get(state.params), jax.device_get(new_state.params), jax.device_get(metrics)


def _max_diff(a, b) -> float:
    return max(
        jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, y: float(np.max(np.abs(x - y))), a, b))
    )


# -- sharding -------------------------------------------------------------------------------------


def sharded_step_subprocess(devices: int, *args: str, flags: str = "", timeout: int = 900) -> dict:
    """tests/training_sharded_step.py with ``devices`` simulated CPU devices; its JSON output."""
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {flags}",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.training_sharded_step", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == devices
    return out


@pytest.fixture(scope="module")
def sharded_steps():
    """One step on 1 device, on a 2x4 (data x fsdp) mesh, and on that mesh in 2 micro-batches."""
    # LLVM's optimisation level 0: a third less compile time; the comparison is within one process.
    out = sharded_step_subprocess(
        8, "--mesh", "2x4", "--mesh", "2x4:2", flags="--xla_backend_optimization_level=0"
    )
    return out["meshes"]


def test_sharded_step_on_8_devices_equals_one_device(sharded_steps):
    mesh = sharded_steps["2x4"]
    assert "fsdp" in mesh["fc1_kernel_spec"]  # params really are split along fsdp
    assert mesh["max_param_diff"] < 1e-5
    assert mesh["loss_diff"] < 1e-5


def test_gradient_accumulation_equals_big_batch(sharded_steps):
    # Gradient cache over 2 micro-batches on the sharded mesh == one big batch on one device.
    mesh = sharded_steps["2x4:2"]
    assert mesh["max_param_diff"] < 1e-5
    assert mesh["loss_diff"] < 1e-5


def test_fsdp_spec_picks_largest_divisible_dim():
    assert T.fsdp_spec((64, 256), 4) == jax.sharding.PartitionSpec(None, "fsdp")
    assert T.fsdp_spec((256, 64), 4) == jax.sharding.PartitionSpec("fsdp")
    assert T.fsdp_spec((6, 10), 4) == jax.sharding.PartitionSpec()
    assert T.fsdp_spec((), 4) == jax.sharding.PartitionSpec()
    assert T.fsdp_spec((64, 256), 1) == jax.sharding.PartitionSpec()
    with pytest.raises(ValueError):
        T.make_mesh(data=1, fsdp=2, devices=jax.devices()[:1])


# -- optimizer ------------------------------------------------------------------------------------


def test_weight_decay_mask(micro_model):
    mask = T.decay_mask(micro_model.params)
    assert mask["text_model"]["encoder"]["layers"]["0"]["self_attn"]["q_proj"]["kernel"] is True
    assert mask["text_model"]["embeddings"]["token_embedding"]["embedding"] is True
    assert mask["vision_model"]["embeddings"]["patch_embedding"]["kernel"] is True
    assert mask["text_projection"]["kernel"] is True
    assert mask["text_model"]["encoder"]["layers"]["0"]["self_attn"]["q_proj"]["bias"] is False
    assert mask["text_model"]["final_layer_norm"]["scale"] is False
    assert mask["vision_model"]["pre_layrnorm"]["bias"] is False
    assert mask["vision_model"]["embeddings"]["class_embedding"] is False
    assert mask["logit_scale"] is False


def test_weight_decay_applies_only_to_masked_leaves():
    params = {"dense": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones(4)}, "logit_scale": jnp.asarray(1.0)}
    tx, _ = T.make_optimizer(T.TrainConfig(learning_rate=0.1, weight_decay=0.5, clip_norm=None), params)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["dense"]["kernel"], -0.1 * 0.5 * 1.0, rtol=1e-6)
    np.testing.assert_array_equal(updates["dense"]["bias"], 0.0)
    assert float(updates["logit_scale"]) == 0.0


def test_schedule_warmup_then_cosine():
    schedule = T.make_schedule(T.TrainConfig(learning_rate=1.0, warmup_steps=10, total_steps=110))
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.5)
    assert float(schedule(10)) == pytest.approx(1.0)
    assert float(schedule(60)) == pytest.approx(0.5, abs=1e-3)
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-6)


def test_clamp_logit_scale():
    assert float(T.clamp_logit_scale({"logit_scale": jnp.asarray(7.0)})["logit_scale"]) == pytest.approx(
        math.log(100)
    )
    assert float(T.clamp_logit_scale({"logit_scale": jnp.asarray(2.0)})["logit_scale"]) == 2.0


# -- frozen tower, clamp in a step, accumulation ------------------------------------------------------


def test_frozen_tower_stays_unchanged_and_logit_scale_is_clamped(micro_model, batch):
    params = dict(micro_model.params)
    params["logit_scale"] = np.asarray(5.0, np.float32)  # above ln(100) = 4.605
    before, after, metrics = _one_step(_model(params), batch, freeze="vision", weight_decay=0.1)
    for key in T.VISION_KEYS:
        assert _max_diff(before[key], after[key]) == 0.0, key
    for key in T.TEXT_KEYS:
        assert _max_diff(before[key], after[key]) > 1e-5, key
    assert float(after["logit_scale"]) == pytest.approx(math.log(100), abs=1e-6)
    assert float(metrics["logit_scale"]) <= math.log(100) + 1e-6


# -- data -----------------------------------------------------------------------------------------


def _write_images(folder, n: int) -> list[str]:
    names = []
    for i in range(n):
        name = f"img{i}.png"
        Image.fromarray(np.full((20, 24, 3), i * 20, np.uint8)).save(os.path.join(folder, name))
        names.append(name)
    return names


def test_caption_file_bad_rows_reported_and_skipped(tmp_path):
    names = _write_images(tmp_path, 4)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    lines = [json.dumps({"image": n, "caption": f"picture {i}"}) for i, n in enumerate(names)]
    lines += [
        "{not json",
        json.dumps({"image": names[0]}),  # no caption
        json.dumps({"image": "missing.png", "caption": "gone"}),
        json.dumps({"image": "broken.png", "caption": "broken"}),
        json.dumps(["a", "list"]),
    ]
    (tmp_path / "caps.jsonl").write_text("\n".join(lines) + "\n")
    ds = D.CaptionDataset(str(tmp_path), str(tmp_path / "caps.jsonl"))
    assert len(ds) == 4
    assert [ds.caption(i) for i in range(4)] == [f"picture {i}" for i in range(4)]
    assert len(ds.problems) == 5
    joined = "\n".join(ds.problems)
    for needle in (
        "caps.jsonl:5",
        "not valid JSON",
        "no caption",
        "missing.png",
        "broken.png",
        "not a JSON object",
    ):
        assert needle in joined

    csv_text = (
        "image,caption\n" + "".join(f"{n},picture {i}\n" for i, n in enumerate(names)) + "missing.png,x\n"
    )
    (tmp_path / "caps.csv").write_text(csv_text)
    ds = D.CaptionDataset(str(tmp_path), str(tmp_path / "caps.csv"))
    assert len(ds) == 4 and len(ds.problems) == 1 and "missing.png" in ds.problems[0]


def test_loader_replaces_images_that_fail_to_decode(tmp_path):
    names = _write_images(tmp_path, 10)
    # A PNG cut short: its header verifies, the pixels do not decode.
    data = (tmp_path / names[3]).read_bytes()
    (tmp_path / names[3]).write_bytes(data[: len(data) // 2])
    (tmp_path / "caps.jsonl").write_text(
        "".join(json.dumps({"image": n, "caption": f"picture {i}"}) + "\n" for i, n in enumerate(names))
    )
    ds = D.CaptionDataset(str(tmp_path), str(tmp_path / "caps.jsonl"), verify_images=False)
    processor = D.make_processor(clip_config("micro"))
    loader = D.BatchLoader(ds, np.arange(10), 8, processor, 8, seed=0, prefetch=0)
    # One batch per epoch (10 // 8): take an epoch whose batch includes the broken image.
    step = next(s for s in range(20) if 3 in D.epoch_order(np.arange(10), 0, s)[:8])
    batch = loader.load_batch(step)
    assert 3 not in batch["index"].tolist()
    assert len(set(batch["index"].tolist())) == 8
    assert batch["pixel_values"].shape == (8, 3, 16, 16)
    assert any("img3.png" in p and "cannot load" in p for p in ds.problems)
    again = D.BatchLoader(ds, np.arange(10), 8, processor, 8, seed=0, prefetch=0).load_batch(step)
    np.testing.assert_array_equal(again["index"], batch["index"])  # the replacement is deterministic


def test_shuffle_is_deterministic_per_epoch_and_prefetch_keeps_order():
    ds = D.SyntheticShapes(40, image_size=16, seed=3)
    processor = D.make_processor(clip_config("micro"))
    indices = np.arange(5, 37)
    make = lambda seed, prefetch: D.BatchLoader(ds, indices, 8, processor, 8, seed=seed, prefetch=prefetch)  # noqa: E731
    a = [b["index"].tolist() for _, b in make(0, 2).iter_from(0, 8)]
    b = [b["index"].tolist() for _, b in make(0, 0).iter_from(0, 8)]
    assert a == b
    epoch0, epoch1 = sum(a[:4], []), sum(a[4:], [])
    assert sorted(epoch0) == sorted(epoch1) == indices.tolist()
    assert epoch0 != epoch1
    assert [x["index"].tolist() for _, x in make(1, 0).iter_from(0, 4)] != a[:4]
    resumed = [x["index"].tolist() for _, x in make(0, 2).iter_from(5, 8)]
    assert resumed == a[5:]
    # Each of two hosts loads its own half of every global batch.
    halves = [
        D.BatchLoader(ds, indices, 8, processor, 8, seed=0, process_index=p, process_count=2) for p in (0, 1)
    ]
    assert halves[0].load_batch(6)["index"].tolist() + halves[1].load_batch(6)["index"].tolist() == a[6]


def test_synthetic_dataset_is_reproducible():
    ds = D.SyntheticShapes(30, image_size=24, seed=1)
    np.testing.assert_array_equal(ds.draw(7), D.SyntheticShapes(30, image_size=24, seed=1).draw(7))
    assert ds.caption(7) == "a " + ds.class_names[ds.label(7)]
    assert len(ds.class_names) == 24
    train, held = D.train_eval_split(30, 0.2, seed=0)
    assert len(held) == 6 and not set(train) & set(held) and len(train) + len(held) == 30


def test_recall_counts_duplicate_captions_as_hits():
    sim = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.0], [0.0, 0.1, 0.9]])
    r = T.recall_at_k(sim, ["a", "b", "c"], ks=(1, 2))
    assert r["i2t_r@1"] == pytest.approx(1 / 3) and r["i2t_r@2"] == 1.0
    assert T.recall_at_k(sim, ["a", "a", "c"], ks=(1,))["i2t_r@1"] == 1.0
    # Repeated captions count once when ranking texts: image 2's caption is second among distinct ones.
    sim = np.array([[0.9, 0.9, 0.1, 0.0], [0.9, 0.9, 0.1, 0.0], [0.9, 0.9, 0.5, 0.0], [0.0, 0.0, 0.1, 0.9]])
    r = T.recall_at_k(sim, ["a", "a", "b", "c"], ks=(1, 2))
    assert r["i2t_r@1"] == 0.75 and r["i2t_r@2"] == 1.0


# -- the script: resume and learning ----------------------------------------------------------------

STEPS = 60


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """The same short from-scratch run three times: uninterrupted; stopped early with checkpoints;
    resumed from its half-way checkpoint. One compilation, reused through the persistent cache."""
    from clip_flax.cli import run

    tmp = tmp_path_factory.mktemp("finetune")
    clip_config("micro").save_pretrained(str(tmp / "cfg"))
    common = ["--config", str(tmp / "cfg"), "--synthetic", "1200", "--eval-fraction", "0.1",
              "--steps", str(STEPS), "--batch-size", "64", "--lr", "3e-3", "--warmup", "5",
              "--eval-every", str(STEPS), "--no-progress", "--log-every", "20",
              "--compilation-cache", str(tmp / "jax-cache")]  # fmt: skip
    ckpt = ["--ckpt-dir", str(tmp / "ckpt"), "--save-every", str(STEPS // 2)]
    full = run(common + ["--metrics-file", str(tmp / "m.jsonl")])
    # Stopped at 3/4: it saved at 1/2 while training on (the state buffers are donated to the next
    # step) and at 3/4. Dropping the last checkpoint resumes from the one written mid-run.
    first = run(common + ckpt + ["--stop-at", str(STEPS * 3 // 4)])
    shutil.rmtree(tmp / "ckpt" / str(STEPS * 3 // 4))
    second = run(common + ckpt + ["--resume", "--export", str(tmp / "out")])
    return {"full": full, "first": first, "second": second, "tmp": tmp}


def test_resume_reproduces_uninterrupted_losses(cli_runs):
    full, first, second = cli_runs["full"], cli_runs["first"], cli_runs["second"]
    assert first["final_step"] == STEPS * 3 // 4
    assert sorted(second["losses"]) == list(range(STEPS // 2, STEPS))
    assert first["losses"] == {s: full["losses"][s] for s in first["losses"]}  # bit for bit
    assert second["losses"] == {s: full["losses"][s] for s in second["losses"]}
    assert len(set(full["losses"].values())) == STEPS
    assert second["evals"][-1] == full["evals"][-1]
    reloaded = FlaxCLIPModel.from_pretrained(str(cli_runs["tmp"] / "out"))
    assert reloaded.config == clip_config("micro")


def test_short_run_from_scratch_beats_chance_zero_shot(cli_runs):
    evals = cli_runs["full"]["evals"]
    start, end = evals[0], evals[-1]
    assert start["step"] == 0 and end["step"] == STEPS
    chance = end["chance"]
    assert start["zero_shot_acc"] < 3 * chance
    assert end["zero_shot_acc"] > 4 * chance, evals
    assert end["i2t_r@5"] > start["i2t_r@5"]
    lines = [json.loads(x) for x in open(cli_runs["tmp"] / "m.jsonl")]
    assert sum("loss" in x for x in lines) == STEPS and any("examples_per_s" in x for x in lines)


# -- sigmoid loss -----------------------------------------------------------------------------------


def test_sigmoid_loss_is_siglips_formula():
    rng = np.random.default_rng(0)
    text, image = (rng.normal(size=(6, 4)).astype(np.float32) for _ in range(2))
    scale, bias = np.float32(np.log(10.0)), np.float32(-10.0)
    logits = np.exp(np.float64(scale)) * image.astype(np.float64) @ text.T.astype(np.float64) + bias
    labels = 2 * np.eye(6) - 1  # image i with text i is the positive pair
    expected = np.mean(np.sum(np.log1p(np.exp(-labels * logits)), axis=1))
    assert float(jax.jit(T.sigmoid_loss)(text, image, scale, bias)) == pytest.approx(expected, rel=1e-5)


def test_chunked_sigmoid_loss_equals_unchunked_on_4_devices():
    """The ring of ppermutes over 4 simulated devices (meshes 2x2 and 4x1) gives the unchunked loss and
    gradients, and its program passes texts around instead of gathering them (one device: no ring)."""
    out = sharded_step_subprocess(
        4, "--sigmoid", "--mesh", "2x2", "--mesh", "4x1", "--mesh", "1x1", timeout=300
    )
    assert sorted(out["sigmoid"]) == ["1x1", "2x2", "4x1"]
    for name, check in out["sigmoid"].items():
        assert check["loss"] > 1.0, name  # SigLIP's bias init: a large loss at the start
        assert check["loss_diff"] <= 1e-5 * check["loss"], name
        for diff, norm in zip(check["grad_diffs"], check["grad_norms"]):
            assert norm > 1e-3 and diff <= 1e-5 * max(1.0, norm), (name, check)
        ring = check["collective_permutes"] >= 1 if name != "1x1" else check["collective_permutes"] == 0
        assert ring and check["all_gathers"] == 0, (name, check)


def test_sigmoid_trainer_holds_logit_bias_beside_the_model(micro_model):
    trainer = T.Trainer(micro_model, T.TrainConfig(loss="sigmoid", total_steps=10), donate=False)
    state = trainer.init_state()
    assert float(state.params["logit_bias"]) == T.SIGLIP_LOGIT_BIAS_INIT
    assert "logit_bias" in trainer.abstract_state().params
    assert "logit_bias" not in T.model_params(state.params)
    assert T.decay_mask({"logit_bias": jnp.zeros(())})["logit_bias"] is False
    with pytest.raises(ValueError, match="loss"):
        T.TrainConfig(loss="hinge")


# -- several hosts --------------------------------------------------------------------------------


def test_hybrid_mesh_keeps_fsdp_within_a_host():
    from types import SimpleNamespace

    # 2 hosts x 4 devices, listed interleaved: a plain reshape would put both hosts in one fsdp group.
    devices = [
        SimpleNamespace(id=i, process_index=i % 2, platform="cpu", device_kind="cpu") for i in range(8)
    ]
    hosts = lambda m: np.vectorize(lambda d: d.process_index)(m)  # noqa: E731
    for fsdp in (1, 2, 4):
        grid = hosts(T.mesh_devices(None, fsdp, devices))
        assert grid.shape == (8 // fsdp, fsdp)
        assert all(len(set(row)) == 1 for row in grid.tolist()), (fsdp, grid)  # fsdp within a host
        assert grid[:, 0].tolist() == sorted(grid[:, 0].tolist())  # each host a contiguous data block
    grid = hosts(T.mesh_devices(None, 8, devices))  # wider than a host: spans both
    assert sorted(grid.ravel().tolist()) == [0] * 4 + [1] * 4
    three = [
        SimpleNamespace(id=i, process_index=i // 4, platform="cpu", device_kind="cpu") for i in range(12)
    ]
    with pytest.raises(ValueError, match="not a multiple of the 4 devices of each host"):
        T.mesh_devices(None, 6, three)


def test_hosts_agree_names_the_host_that_differs(monkeypatch):
    fingerprint = "ab" * 32
    assert T.hosts_agree(fingerprint, 10, "shards") is None  # one process: nothing to compare

    def rows_of(values):
        def gather(local):
            return np.stack([local[0] if v is None else v for v in values])

        return gather

    same = np.asarray([*T._digest_words(fingerprint), 10, 0], np.int64)
    other = np.asarray([*T._digest_words("cd" * 32), 9, 0], np.int64)
    monkeypatch.setattr(T, "gather_rows", rows_of([None, same, other]))
    with pytest.raises(T.HostsDisagree, match=r"host 2 \(9 files.*\) differs from hosts 0, 1 \(10 files"):
        T.hosts_agree(fingerprint, 10, "shards", unit="files")
    failed = np.asarray([0, 0, 0, 0, -1, 1], np.int64)
    monkeypatch.setattr(T, "host_error", lambda host, timeout_s=10.0: "ShardError: s-7.tar is truncated")
    monkeypatch.setattr(T, "gather_rows", rows_of([None, failed]))
    with pytest.raises(T.HostsDisagree, match="failed on host 1: ShardError: s-7.tar is truncated"):
        T.hosts_agree(fingerprint, 10, "shards")


def test_initialize_distributed_passes_what_is_given(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    T.initialize_distributed()  # all auto-detected (TPU pods, SLURM, Open MPI)
    T.initialize_distributed(None, 2, 1)  # the coordinator from JAX_COORDINATOR_ADDRESS
    T.initialize_distributed("10.0.0.1:1234", 4, 0, [0, 1])
    assert calls == [
        {},
        {"num_processes": 2, "process_id": 1},
        {
            "coordinator_address": "10.0.0.1:1234",
            "num_processes": 4,
            "process_id": 0,
            "local_device_ids": [0, 1],
        },
    ]


# -- streamed shards ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shard_files(tmp_path_factory):
    from tests.test_shards import write_shards

    pattern = write_shards(str(tmp_path_factory.mktemp("shards")), n_shards=6, per_shard=5)
    from clip_core.shards import list_shards

    return list_shards(pattern)


def _batches(loader, start, stop, state=None):
    return [(s, b) for s, b in loader.iter_from(start, stop, state=state)]


def test_shard_stream_shuffles_and_visits_every_sample_once_per_epoch(shard_files):
    mine = shard_files[:3]  # 15 samples, blocks of 4
    stream = D.iter_stream(mine, seed=0, stream=1, block_size=4)
    seen = [next(stream) for _ in range(30)]
    epochs = [[item.caption for item, _ in seen[:15]], [item.caption for item, _ in seen[15:]]]
    in_files = [f"a picture number {i}" for i in range(15)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(in_files)
    assert epochs[0] != in_files and epochs[0] != epochs[1]
    assert seen[14][1] == (1, 0, 0, 0, 0)  # after an epoch: the start of the next
    # From any position, the stream continues exactly.
    for k in (0, 3, 6, 14, 20):
        again = D.iter_stream(mine, seed=0, stream=1, block_size=4, position=seen[k][1])
        assert [next(again)[0].caption for _ in range(6)] == [item.caption for item, _ in seen[k + 1 : k + 7]]


def test_shard_loader_hosts_read_their_own_shards_and_make_the_same_batches(shard_files):
    processor = D.make_processor(clip_config("micro"))
    make = lambda **kw: D.ShardLoader(shard_files, 8, processor, 8, num_streams=4, block_size=3, **kw)  # noqa: E731
    one = _batches(make(), 0, 5)
    hosts = [make(process_index=h, process_count=2) for h in range(2)]
    assert not set(hosts[0].local_shards) & set(hosts[1].local_shards)
    assert sorted(hosts[0].local_shards + hosts[1].local_shards) == shard_files
    assert sum(h.count_local_samples() for h in hosts) == 30
    parts = [_batches(h, 0, 5) for h in hosts]
    for step in range(5):
        for key in ("pixel_values", "input_ids", "attention_mask"):
            joined = np.concatenate([parts[0][step][1][key], parts[1][step][1][key]])
            np.testing.assert_array_equal(joined, one[step][1][key])
    # Resumed from the positions saved with batch 2 (all streams' rows, as a checkpoint holds them):
    # the same batches 3 and 4, on one host or two.
    saved = one[2][1]["data_state"]
    assert saved.shape == (4, 5)
    for loader, rows in ((make(), saved), (hosts[1], saved)):
        resumed = _batches(loader, 3, 5, state=rows)
        expected = [b for _, b in one[3:]] if loader.streams == [0, 1, 2, 3] else [b for _, b in parts[1][3:]]
        assert [s for s, _ in resumed] == [3, 4]
        for (_, got), want in zip(resumed, expected):
            np.testing.assert_array_equal(got["pixel_values"], want["pixel_values"])
    with pytest.raises(D.DataError, match="multiple of the 4 data streams"):
        D.ShardLoader(shard_files, 6, processor, 8, num_streams=4)
    with pytest.raises(D.DataError, match="3 hosts"):
        D.ShardLoader(shard_files, 8, processor, 8, num_streams=4, process_count=3)


def test_shard_loader_skips_and_replaces_bad_samples(tmp_path):
    from tests.test_shards import write_shard

    good = lambda i: {"png": _png_bytes(i), "txt": f"good {i}".encode()}  # noqa: E731
    samples = [(f"k{i}", good(i)) for i in range(6)]
    samples[1] = ("k1", {"png": _png_bytes(1)})  # no caption: skipped when read
    samples[3] = ("k3", {"png": b"\x89PNG not really", "txt": b"broken"})  # replaced when decoded
    write_shard(str(tmp_path / "s.tar"), samples)
    processor = D.make_processor(clip_config("micro"))
    runs = []
    for _ in range(2):
        loader = D.ShardLoader([str(tmp_path / "s.tar")], 4, processor, 8, num_streams=1, block_size=1)
        _, batch = next(loader.iter_from(0, 1))
        runs.append((batch, loader.problems))
    (batch, problems), (again, _) = runs
    captions = [processor.tokenizer.decode(ids, skip_special_tokens=True) for ids in batch["input_ids"]]
    # Blocks of 1 keep the file order; k3's slot takes the stream's next sample, k5.
    assert captions == ["good 0", "good 2", "good 5", "good 4"]
    assert any("k1: no caption" in p for p in problems) and any("k3: cannot decode" in p for p in problems)
    np.testing.assert_array_equal(batch["pixel_values"], again["pixel_values"])
    # Decoded on the loader's threads, one row at a time: the processor's own numbers.
    import io

    whole = processor.image_processor(Image.open(io.BytesIO(_png_bytes(4))), return_tensors="np")
    np.testing.assert_array_equal(batch["pixel_values"][3], whole["pixel_values"][0])
    # Epoch 0, block 5 next, from sample 6 of the first shard: all 6 samples were read (5 blocks of 1).
    assert batch["data_state"].tolist() == [[0, 5, 0, 6, 0]]


def test_shard_loader_refuses_decompression_bombs_before_decoding(tmp_path, monkeypatch):
    """Over PIL's pixel limit a sample is reported and replaced, whether PIL would only warn (under
    twice its limit: it would decode it) or raise its own error type (above); a shard without one
    decodable image stops the loader with a DataError instead of searching forever."""
    from tests.test_shards import write_shard

    def png(side: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(buf, "PNG")
        return buf.getvalue()

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150)  # the 12 x 12 samples (144 pixels) pass
    samples = [("k0", {"png": png(14), "txt": b"warned"}), ("k1", {"png": png(30), "txt": b"raised"})]
    samples += [(f"k{i}", {"png": _png_bytes(i), "txt": f"good {i}".encode()}) for i in (2, 3)]
    write_shard(str(tmp_path / "s.tar"), samples)
    processor = D.make_processor(clip_config("micro"))
    loader = D.ShardLoader([str(tmp_path / "s.tar")], 2, processor, 8, num_streams=1, block_size=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL never gets to decode
        _, batch = next(loader.iter_from(0, 1))
    captions = [processor.tokenizer.decode(ids, skip_special_tokens=True) for ids in batch["input_ids"]]
    assert captions == ["good 2", "good 3"]
    decode_problems = [p for p in loader.problems if "cannot decode" in p]
    assert len(decode_problems) == 2
    assert all("ValueError" in p and "decompression bomb" in p for p in decode_problems)
    with pytest.raises(ValueError, match=r"k0.*decompression bomb"):
        D.decode_image(png(14), "k0")
    # only bombs: a clear error after MAX_DECODE_FAILURES_IN_A_ROW replacements, not a hang
    write_shard(str(tmp_path / "bad.tar"), samples[:2])
    monkeypatch.setattr(D, "MAX_DECODE_FAILURES_IN_A_ROW", 10)
    loader = D.ShardLoader([str(tmp_path / "bad.tar")], 2, processor, 8, num_streams=1, block_size=1)
    with pytest.raises(D.DataError, match="10 images in a row could not be decoded"):
        next(loader.iter_from(0, 1))


def _png_bytes(seed: int) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.full((12, 12, 3), seed * 30, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_cli_rejects_bad_distributed_flags(capsys):
    from clip_flax.cli import run

    with pytest.raises(SystemExit) as e:
        run(["--config", "tiny", "--synthetic", "10", "--local-device-ids", "0,x"])
    assert (
        e.value.code == 2 and "--local-device-ids must be comma-separated integers" in capsys.readouterr().err
    )


def test_shard_samples_hold_a_held_out_set(shard_files):
    held = D.ShardSamples(shard_files[:2])
    assert len(held) == 10 and held.label(3) == -1 and held.class_names == []
    image, caption = held.load(7)
    assert (
        caption == held.caption(7) == "a picture number 7" and image.mode == "RGB" and image.size == (20, 16)
    )
    assert held.describe(7).endswith("s-001.tar:001/000007")
    processor = D.make_processor(clip_config("micro"))
    arrays = D.encode_eval_set(held, np.arange(len(held)), processor, 8)
    assert arrays["pixel_values"].shape == (10, 3, 16, 16) and arrays["captions"][7] == "a picture number 7"
