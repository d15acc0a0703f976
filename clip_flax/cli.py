"""clip-finetune-flax: fine-tune (or train from scratch) a FlaxCLIPModel with a contrastive loss,
sharded over all devices. The pieces are clip_flax.training and clip_flax.data; this is the command.

    # from scratch on the built-in synthetic shapes, with held-out zero-shot accuracy every 50 steps
    clip-finetune-flax --config tiny --synthetic 4000 --steps 300 --eval-every 50

    # fine-tune a checkpoint folder on image-caption pairs, checkpoints every 500 steps, export at the end
    clip-finetune-flax --init-from ./clip-vit-base-patch32 --data-dir imgs --captions caps.jsonl \\
        --batch-size 256 --lr 1e-5 --warmup 500 --steps 10000 --dtype bf16 --remat \\
        --mesh-fsdp 4 --ckpt-dir ckpt --save-every 500 --resume --export ./finetuned

The mesh has a "data" axis and an "fsdp" axis (--mesh-data x --mesh-fsdp = number of devices; by
default all devices on "data"). --batch-size is the global batch; in a multi-host run (--distributed)
each host loads its own share. Resuming (--resume with --ckpt-dir) restores params, optimizer state,
step and RNG; the data order is a function of (seed, step), so the resumed run repeats the
uninterrupted one. Losses, learning rate, examples/s and evaluations go to the log, to a progress
bar, and (with --metrics-file) to a JSONL file. ``run(argv)`` does the same and returns the losses
and evaluations.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

log = logging.getLogger("finetune_flax")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clip-finetune-flax", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = p.add_argument_group("model")
    m = g.add_mutually_exclusive_group(required=True)
    m.add_argument("--init-from", help="checkpoint folder (config.json + weights) to fine-tune")
    m.add_argument(
        "--config", help="train from scratch: 'tiny', 'vit-b-32', or a config.json (file or folder)"
    )
    g.add_argument(
        "--dtype", choices=["fp32", "bf16"], default="fp32", help="compute dtype (params stay fp32)"
    )
    g.add_argument("--remat", action="store_true", help="recompute encoder activations in the backward pass")
    g.add_argument("--freeze", choices=["text", "vision"], help="keep this tower fixed (LiT-style)")

    g = p.add_argument_group("data")
    d = g.add_mutually_exclusive_group(required=True)
    d.add_argument("--synthetic", type=int, metavar="N", help="N generated shape images ('a red circle')")
    d.add_argument("--data-dir", help="folder the image paths in --captions are relative to")
    g.add_argument("--captions", help="JSONL ({'image': ..., 'caption': ...}) or CSV (image,caption header)")
    g.add_argument("--eval-fraction", type=float, default=0.1, help="held-out share of the data")
    g.add_argument("--no-verify-images", action="store_true", help="skip opening every image up front")
    g.add_argument("--prefetch", type=int, default=2, help="batches prepared ahead on a thread")

    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=1000)
    g.add_argument("--batch-size", type=int, default=64, help="global batch size")
    g.add_argument("--lr", type=float, default=5e-4)
    g.add_argument("--warmup", type=int, default=0, help="linear warm-up steps, then cosine decay")
    g.add_argument("--end-lr-fraction", type=float, default=0.0)
    g.add_argument("--weight-decay", type=float, default=0.1)
    g.add_argument("--b2", type=float, default=0.98)
    g.add_argument("--clip-norm", type=float, default=1.0, help="global gradient norm clip (0 = off)")
    g.add_argument("--accum", type=int, default=1, help="micro-batches per step (gradient cache)")
    g.add_argument("--seed", type=int, default=0, help="init, data order and dropout")

    g = p.add_argument_group("devices")
    g.add_argument("--mesh-data", type=int, help="size of the data axis (default: devices / fsdp)")
    g.add_argument("--mesh-fsdp", type=int, default=1, help="size of the parameter-sharding axis")
    g.add_argument(
        "--compilation-cache",
        metavar="DIR",
        help="JAX's persistent compilation cache (reruns skip compiling)",
    )
    g.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize (multi-host)")
    g.add_argument("--coordinator", help="coordinator host:port (when not auto-detected)")
    g.add_argument("--num-processes", type=int)
    g.add_argument("--process-id", type=int)

    g = p.add_argument_group("checkpoints, evaluation, logging")
    g.add_argument("--ckpt-dir", help="orbax checkpoint folder")
    g.add_argument("--save-every", type=int, default=1000)
    g.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    g.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --ckpt-dir")
    g.add_argument("--export", help="write the final weights here (config.json + model.safetensors)")
    g.add_argument("--eval-every", type=int, default=0, help="evaluate on the held-out split every N steps")
    g.add_argument("--log-every", type=int, default=10)
    g.add_argument("--metrics-file", help="append one JSON line per step and per evaluation")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--stop-at", type=int, help=argparse.SUPPRESS)  # stop early, as if interrupted (tests)
    return p


def _check_args(parser, args) -> None:
    if args.data_dir and not args.captions:
        parser.error("--data-dir needs --captions")
    if args.resume and not args.ckpt_dir:
        parser.error("--resume needs --ckpt-dir")
    if args.steps < 1 or args.batch_size < 1 or args.accum < 1:
        parser.error("--steps, --batch-size and --accum must be positive")


class _Progress:
    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
            except ImportError:
                pass

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def update_postfix(self, postfix: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(argv: list[str] | None = None) -> dict:
    """Train as the command line says; returns {"losses": {step: loss}, "evals": [...], "final_step": n}."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file it writes at INFO

    import jax
    import jax.numpy as jnp

    from clip_flax import FlaxCLIPModel
    from clip_flax import data as D
    from clip_flax import training as T

    if args.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    if args.distributed:
        T.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    main_process = jax.process_index() == 0

    dtype = jnp.bfloat16 if args.dtype == "bf16" else jnp.float32
    if args.init_from:
        model = FlaxCLIPModel.from_pretrained(args.init_from, dtype=dtype, remat=args.remat)
    else:
        if args.config in T.CONFIGS:
            config = T.CONFIGS[args.config]()
        else:
            from clip_core.config import CLIPConfig

            config = CLIPConfig.from_pretrained(args.config)
        model = FlaxCLIPModel(config, dtype=dtype, remat=args.remat, _do_init=False)
        model.params = T.init_params(config, seed=args.seed)  # on the host: nothing to compile
    config = model.config
    processor = D.make_processor(config)
    max_length = config.text_config.max_position_embeddings

    if args.synthetic:
        dataset = D.SyntheticShapes(args.synthetic, config.vision_config.image_size, seed=args.seed)
    else:
        dataset = D.CaptionDataset(args.data_dir, args.captions, verify_images=not args.no_verify_images)
    train_idx, eval_idx = D.train_eval_split(len(dataset), args.eval_fraction, seed=args.seed)
    if dataset.problems and main_process:
        log.warning("%d rows skipped (see the warnings above)", len(dataset.problems))

    tcfg = T.TrainConfig(
        learning_rate=args.lr,
        warmup_steps=args.warmup,
        total_steps=args.steps,
        end_lr_fraction=args.end_lr_fraction,
        weight_decay=args.weight_decay,
        b2=args.b2,
        clip_norm=args.clip_norm or None,
        accum_steps=args.accum,
        freeze=args.freeze,
        seed=args.seed,
    )
    mesh = T.make_mesh(args.mesh_data, args.mesh_fsdp)
    trainer = T.Trainer(model, tcfg, mesh)
    trainer.check_batch_size(args.batch_size)
    record = {
        "seed": args.seed,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "num_examples": len(dataset),
        "config": config.to_dict(),
    }

    checkpointer = T.Checkpointer(args.ckpt_dir, args.save_every, args.keep) if args.ckpt_dir else None
    state, start = None, 0
    if checkpointer is not None and args.resume and checkpointer.latest_step() is not None:
        state, saved = checkpointer.restore(trainer.abstract_state())
        start = int(jax.device_get(state.step))
        for key in ("seed", "batch_size", "steps", "num_examples"):
            if saved.get(key) != record[key]:
                log.warning(
                    "resuming with %s=%s, the checkpoint had %s: the run will differ",
                    key,
                    record[key],
                    saved.get(key),
                )
        if main_process:
            log.info("resumed from %s at step %d", checkpointer.directory, start)
    if state is None:
        state = trainer.init_state()

    loader = D.BatchLoader(
        dataset,
        train_idx,
        args.batch_size,
        processor,
        max_length,
        seed=args.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        prefetch=args.prefetch,
    )
    eval_set = None
    if args.eval_every and len(eval_idx):
        eval_set = D.encode_eval_set(dataset, eval_idx, processor, max_length)

    metrics_file = open(args.metrics_file, "a") if args.metrics_file and main_process else None  # noqa: SIM115
    result = {"losses": {}, "evals": [], "final_step": start}

    def emit(line: dict) -> None:
        if metrics_file is not None:
            metrics_file.write(json.dumps(line) + "\n")
            metrics_file.flush()

    def run_eval(step: int) -> None:
        metrics = T.evaluate(trainer, state.params, eval_set, dataset.class_names, processor, max_length)
        result["evals"].append({"step": step, **metrics})
        emit({"step": step, "eval": metrics})
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
        progress.write(f"eval @ step {step}: {shown}")

    stop = min(args.steps, args.stop_at) if args.stop_at else args.steps
    progress = _Progress(args.steps, start, main_process and not args.no_progress)
    if main_process:
        progress.write(
            f"{len(train_idx)} train / {len(eval_idx)} held-out examples; mesh {dict(mesh.shape)} on "
            f"{jax.device_count()} {jax.devices()[0].platform} device(s); batch {args.batch_size}; "
            f"steps {start}->{stop}"
        )
    if eval_set is not None and start == 0:
        run_eval(0)

    pending, window_start, window_examples = [], None, 0
    try:
        for step, batch in loader.iter_from(start, stop):
            state, metrics = trainer.step(state, batch)
            pending.append((step, metrics))
            if window_start is not None:
                window_examples += args.batch_size
            done = step + 1
            last = done == stop
            evaluating = eval_set is not None and (done % args.eval_every == 0 or last)
            if done % args.log_every == 0 or last or evaluating:
                rows = [(s, jax.device_get(m)) for s, m in pending]
                now = time.perf_counter()
                speed = window_examples / (now - window_start) if window_examples else None
                for s, m in rows:
                    loss = float(m["loss"])
                    result["losses"][s] = loss
                    emit(
                        {
                            "step": s,
                            "loss": loss,
                            "lr": float(m["lr"]),
                            "grad_norm": float(m["grad_norm"]),
                            "logit_scale": float(m["logit_scale"]),
                        }
                    )
                line = f"step {done}/{args.steps} loss {loss:.4f} lr {float(rows[-1][1]['lr']):.3g}"
                if speed:
                    line += f" {speed:.1f} ex/s"
                    emit({"step": rows[-1][0], "examples_per_s": speed})
                    result["examples_per_s"] = speed
                if done % args.log_every == 0 or last:
                    progress.write(line)
                progress.update_postfix({"loss": f"{loss:.3f}"})
                # The first window includes compilation; examples/s counts whole windows after it.
                pending, window_start, window_examples = [], now, 0
            progress.update()
            if checkpointer is not None:
                if done % args.save_every == 0 or last:
                    checkpointer.save(state, {**record, "step": done}, force=True)
            if evaluating:
                run_eval(done)
                window_start = time.perf_counter()  # evaluation time is not training time
            result["final_step"] = done
    finally:
        progress.close()
        if checkpointer is not None:
            checkpointer.close()
        if metrics_file is not None:
            metrics_file.close()

    if args.export and result["final_step"] == args.steps:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            params = multihost_utils.process_allgather(state.params)
        else:
            params = jax.device_get(state.params)
        if main_process:
            model.save_pretrained(args.export, params=params)
            progress.write(f"exported the final weights to {args.export}")
    return result


def main(argv: list[str] | None = None) -> int:
    run(argv)
    return 0
