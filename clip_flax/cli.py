"""clip-finetune-flax: fine-tune (or train from scratch) a FlaxCLIPModel with a contrastive loss,
sharded over all devices of one or many hosts. The pieces are clip_flax.training and clip_flax.data;
this is the command.

    # from scratch on the built-in synthetic shapes, with held-out zero-shot accuracy every 50 steps
    clip-finetune-flax --config tiny --synthetic 4000 --steps 300 --eval-every 50

    # fine-tune a checkpoint folder on image-caption pairs, checkpoints every 500 steps, export at the end
    clip-finetune-flax --init-from ./clip-vit-base-patch32 --data-dir imgs --captions caps.jsonl \\
        --batch-size 256 --lr 1e-5 --warmup 500 --steps 10000 --dtype bf16 --remat \\
        --mesh-fsdp 4 --ckpt-dir ckpt --save-every 500 --resume --export ./finetuned

    # webdataset shards (img2dataset's output) and SigLIP's sigmoid loss, on every host of a pod slice
    clip-finetune-flax --distributed --init-from ./clip --shards '/data/cc3m/{00000..00331}.tar' \\
        --loss sigmoid --batch-size 4096 --steps 20000 --ckpt-dir /shared/ckpt --resume

Data: --synthetic, a caption file (--data-dir + --captions; every host indexes all of it: for small
data) or --shards, streamed: each host reads only its own shards (its share of --data-streams),
shuffled in blocks of --shuffle-buffer samples and decoded on --data-threads threads ahead of the
step; the data position is saved with every checkpoint, so --resume continues exactly. At start-up
the hosts check through a collective that they see the same data and stop with a message naming the
host that differs; a loading error on any host stops every host with that error.

The mesh has a "data" axis and an "fsdp" axis (--mesh-data x --mesh-fsdp = number of devices; by
default all devices on "data"); with several hosts "data" runs across hosts and "fsdp" within one.
--batch-size is the global batch. Several hosts: --distributed (or any of --coordinator,
--num-processes, --process-id, --local-device-ids) calls jax.distributed.initialize with the flags
given; JAX detects the rest on TPU pods, SLURM and Open MPI. Resuming (--resume with --ckpt-dir)
restores params, optimizer state, step, RNG and data position, so the resumed run repeats the
uninterrupted one. A checkpoint is final when "checkpoint saved at step N" is printed. Losses,
learning rate, examples/s and evaluations go to the log, a progress bar (--no-progress turns it off),
and (with --metrics-file) a JSONL file. ``run(argv)`` does the same and returns the losses and
evaluations.
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
    d.add_argument(
        "--shards",
        nargs="+",
        metavar="PATTERN",
        help="webdataset .tar shards ('data/{00000..00099}.tar', globs): image + caption per sample",
    )
    g.add_argument("--captions", help="JSONL ({'image': ..., 'caption': ...}) or CSV (image,caption header)")
    g.add_argument(
        "--eval-fraction", type=float, default=0.1, help="held-out share of a caption file or synthetic set"
    )
    g.add_argument("--eval-shards", nargs="+", metavar="PATTERN", help="held-out shards (read by every host)")
    g.add_argument("--no-verify-images", action="store_true", help="skip opening every image up front")
    g.add_argument("--prefetch", type=int, default=2, help="batches prepared ahead on a thread")
    g.add_argument(
        "--data-streams",
        type=int,
        help="shard streams in all: a multiple of the hosts that divides --batch-size (default 2 per host)",
    )
    g.add_argument("--shuffle-buffer", type=int, default=256, help="samples shuffled together per stream")
    g.add_argument("--data-threads", type=int, help="image decoding threads per host (default: CPUs, <= 8)")

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
    g.add_argument(
        "--loss",
        choices=["softmax", "sigmoid"],
        default="softmax",
        help="CLIP's softmax contrastive loss, or SigLIP's pairwise sigmoid loss (with a learnable bias)",
    )
    g.add_argument("--logit-bias-init", type=float, default=-10.0, help="sigmoid loss: initial bias")

    g = p.add_argument_group("devices")
    g.add_argument("--mesh-data", type=int, help="size of the data axis (default: devices / fsdp)")
    g.add_argument("--mesh-fsdp", type=int, default=1, help="size of the parameter-sharding axis")
    g.add_argument(
        "--compilation-cache",
        metavar="DIR",
        help="JAX's persistent compilation cache (reruns skip compiling)",
    )
    g.add_argument(
        "--distributed", action="store_true", help="call jax.distributed.initialize (several hosts)"
    )
    g.add_argument("--coordinator", help="coordinator host:port (when not auto-detected)")
    g.add_argument("--num-processes", type=int, help="processes in all (when not auto-detected)")
    g.add_argument("--process-id", type=int, help="this process's index (when not auto-detected)")
    g.add_argument(
        "--local-device-ids", help="comma-separated ids of the local devices this process uses (e.g. 0,1)"
    )

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
    if args.local_device_ids is not None:
        try:
            args.local_device_ids = [int(x) for x in args.local_device_ids.split(",") if x.strip()]
        except ValueError:
            parser.error(
                f"--local-device-ids must be comma-separated integers, got {args.local_device_ids!r}"
            )
    for name in ("data_streams", "shuffle_buffer", "data_threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.resume and not args.ckpt_dir:
        parser.error("--resume needs --ckpt-dir")
    if args.steps < 1 or args.batch_size < 1 or args.accum < 1:
        parser.error("--steps, --batch-size and --accum must be positive")


class _Progress:
    """A tqdm bar (when ``enabled``) or plain lines; nothing at all on the other hosts (``silent``)."""

    def __init__(self, total: int, initial: int, enabled: bool, silent: bool = False) -> None:
        self.bar, self.silent = None, silent
        if enabled and not silent:
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
        if self.silent:
            return
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _distributed_requested(args) -> bool:
    explicit = (args.coordinator, args.num_processes, args.process_id, args.local_device_ids)
    return args.distributed or any(v is not None for v in explicit)


def _make_data(args, config, processor, max_length):
    """(train loader, held-out dataset or None, held-out indices, number of examples, data record, summary).

    Every host calls it; the hosts compare what they see through a collective before anything else."""
    import jax
    import numpy as np

    from clip_flax import data as D
    from clip_flax import training as T

    host, hosts = jax.process_index(), jax.process_count()
    what = "shards" if args.shards else "caption file" if args.captions else "synthetic data"
    try:
        if args.shards:
            from clip_core.shards import list_shards, shards_fingerprint

            shards = list_shards(args.shards)
            loader = D.ShardLoader(
                shards,
                args.batch_size,
                processor,
                max_length,
                seed=args.seed,
                num_streams=args.data_streams,
                process_index=host,
                process_count=hosts,
                block_size=args.shuffle_buffer,
                threads=args.data_threads,
                prefetch=args.prefetch,
            )
            fingerprint, count = shards_fingerprint(shards), loader.count_local_samples()
            eval_data = D.ShardSamples(list_shards(args.eval_shards)) if args.eval_shards else None
        else:
            if args.synthetic:
                dataset = D.SyntheticShapes(args.synthetic, config.vision_config.image_size, seed=args.seed)
            else:
                dataset = D.CaptionDataset(
                    args.data_dir, args.captions, verify_images=not args.no_verify_images
                )
            fingerprint, count = dataset.fingerprint(), len(dataset)
    except (D.DataError, OSError, ValueError) as e:
        if hosts == 1:
            raise
        T.hosts_agree("", -1, what, error=f"{type(e).__name__}: {e}")  # raises on every host
        raise
    if args.shards:
        T.hosts_agree(fingerprint, len(shards), what, unit="files")
        num_examples = int(T.gather_rows(np.asarray([count])).sum())  # each host counted its own shards
        eval_idx = np.arange(len(eval_data)) if eval_data is not None else np.zeros(0, np.int64)
        record = {"kind": "shards", "fingerprint": fingerprint, "num_streams": loader.num_streams}
        summary = (
            f"{num_examples} examples in {len(shards)} shards, {loader.num_streams} streams "
            f"({len(loader.streams)} on each host), {len(eval_idx)} held-out"
        )
        return loader, eval_data, eval_idx, num_examples, record, summary
    T.hosts_agree(fingerprint, count, what)
    train_idx, eval_idx = D.train_eval_split(len(dataset), args.eval_fraction, seed=args.seed)
    if dataset.problems and host == 0:
        log.warning("%d rows skipped (see the warnings above)", len(dataset.problems))
    loader = D.BatchLoader(
        dataset,
        train_idx,
        args.batch_size,
        processor,
        max_length,
        seed=args.seed,
        process_index=host,
        process_count=hosts,
        prefetch=args.prefetch,
    )
    record = {"kind": "indexed", "fingerprint": fingerprint}
    summary = f"{len(train_idx)} train / {len(eval_idx)} held-out examples"
    return loader, dataset, eval_idx, len(dataset), record, summary


def _placeholder_batch(local_batch: int, max_length: int, image_size: int, host: int) -> dict:
    """What a host whose loader failed feeds the step, so that the others are not left waiting in its
    collectives; ``status`` tells every host which one failed."""
    import numpy as np

    return {
        "input_ids": np.zeros((local_batch, max_length), np.int32),
        "attention_mask": np.ones((local_batch, max_length), np.int32),
        "pixel_values": np.zeros((local_batch, 3, image_size, image_size), np.float32),
        "status": np.full(local_batch, host + 1, np.int32),
    }


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
    import numpy as np

    from clip_flax import FlaxCLIPModel
    from clip_flax import data as D
    from clip_flax import training as T

    if args.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    if _distributed_requested(args):
        T.initialize_distributed(args.coordinator, args.num_processes, args.process_id, args.local_device_ids)
    host, hosts = jax.process_index(), jax.process_count()
    main_process = host == 0

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
        if args.loss == "sigmoid":
            model.params["logit_scale"] = np.float32(T.SIGLIP_LOGIT_SCALE_INIT)
    config = model.config
    processor = D.make_processor(config)
    max_length = config.text_config.max_position_embeddings
    loader, eval_data, eval_idx, num_examples, data_record, summary = _make_data(
        args, config, processor, max_length
    )
    streamed = isinstance(loader, D.ShardLoader)

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
        loss=args.loss,
        logit_bias_init=args.logit_bias_init,
    )
    mesh = T.make_mesh(args.mesh_data, args.mesh_fsdp)
    trainer = T.Trainer(model, tcfg, mesh)
    trainer.check_batch_size(args.batch_size)
    record = {
        "seed": args.seed,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "num_examples": num_examples,
        "loss": args.loss,
        "config": config.to_dict(),
    }

    checkpointer = T.Checkpointer(args.ckpt_dir, args.save_every, args.keep) if args.ckpt_dir else None
    state, start, data_state = None, 0, None
    if checkpointer is not None and args.resume and checkpointer.latest_step() is not None:
        state, saved = checkpointer.restore(trainer.abstract_state())
        start = int(jax.device_get(state.step))
        for key in ("seed", "batch_size", "steps", "num_examples"):
            if saved.get(key) != record[key] and main_process:
                log.warning(
                    "resuming with %s=%s, the checkpoint had %s: the run will differ",
                    key,
                    record[key],
                    saved.get(key),
                )
        saved_data = saved.get("data") or {}
        if streamed:
            same = all(saved_data.get(k) == data_record[k] for k in ("fingerprint", "num_streams"))
            if same and "state" in saved_data:
                data_state = np.asarray(saved_data["state"], np.int64)
            elif main_process:
                log.warning(
                    "the shards or --data-streams differ from the checkpoint's: the data starts again "
                    "from the beginning of the shards"
                )
        if main_process:
            log.info("resumed from %s at step %d", checkpointer.directory, start)
    if state is None:
        state = trainer.init_state()

    eval_set = None
    if args.eval_every and eval_data is not None and len(eval_idx):
        eval_set = D.encode_eval_set(eval_data, eval_idx, processor, max_length)

    metrics_file = open(args.metrics_file, "a") if args.metrics_file and main_process else None  # noqa: SIM115
    result = {"losses": {}, "evals": [], "final_step": start}

    def emit(line: dict) -> None:
        if metrics_file is not None:
            metrics_file.write(json.dumps(line) + "\n")
            metrics_file.flush()

    def run_eval(step: int) -> None:
        metrics = T.evaluate(trainer, state.params, eval_set, eval_data.class_names, processor, max_length)
        result["evals"].append({"step": step, **metrics})
        emit({"step": step, "eval": metrics})
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
        progress.write(f"eval @ step {step}: {shown}")

    failure = None  # this host's loader error (several hosts: it trains on placeholders until all stop)

    def check_data(rows) -> None:
        """Stop every host at the same step when any host's loader failed (rows: (step, metrics))."""
        for s, m in rows:
            code = int(m["data_error"])
            if code:
                if failure is not None:
                    raise failure
                message = T.host_error(code - 1) or "see that host's log"
                raise D.DataError(f"loading data failed on host {code - 1} at step {s}: {message}")

    stop = min(args.steps, args.stop_at) if args.stop_at else args.steps
    progress = _Progress(args.steps, start, not args.no_progress, silent=not main_process)
    progress.write(
        f"{summary}; mesh {dict(mesh.shape)} on {jax.device_count()} {jax.devices()[0].platform} "
        f"device(s), {hosts} host(s); batch {args.batch_size}; loss {args.loss}; steps {start}->{stop}"
    )
    if eval_set is not None and start == 0:
        run_eval(0)

    if streamed:
        data_iter = loader.iter_from(start, stop, state=data_state)
        last_data_state = loader.local_state(data_state)
    else:
        data_iter = loader.iter_from(start, stop)
    image_size = config.vision_config.image_size
    pending, previous, window_start, window_examples = [], None, None, 0
    try:
        for step in range(start, stop):
            if failure is None:
                try:
                    _, batch = next(data_iter)
                except Exception as e:
                    if hosts == 1:
                        raise
                    failure = e
                    T.publish_host_error(f"{type(e).__name__}: {e}")
                    log.error("host %d: loading data failed at step %d: %s", host, step, e)
            if failure is not None:
                batch = _placeholder_batch(args.batch_size // hosts, max_length, image_size, host)
            elif streamed:
                last_data_state = batch["data_state"]
            state, metrics = trainer.step(state, batch)
            if hosts > 1 and previous is not None:
                check_data([previous])  # the step before: the device keeps working on this one
            previous = (step, {"data_error": metrics["data_error"]})
            pending.append((step, metrics))
            if window_start is not None:
                window_examples += args.batch_size
            done = step + 1
            last = done == stop
            saving = checkpointer is not None and (done % args.save_every == 0 or last)
            evaluating = eval_set is not None and (done % args.eval_every == 0 or last)
            if done % args.log_every == 0 or last or evaluating or saving:
                rows = [(s, jax.device_get(m)) for s, m in pending]
                check_data(rows)
                now = time.perf_counter()
                speed = window_examples / (now - window_start) if window_examples else None
                for s, m in rows:
                    loss = float(m["loss"])
                    result["losses"][s] = loss
                    line = {
                        k: float(m[k]) for k in ("lr", "grad_norm", "logit_scale", "logit_bias") if k in m
                    }
                    emit({"step": s, "loss": loss, **line})
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
            if saving:
                saved_record = {**record, "step": done, "data": dict(data_record)}
                if streamed:  # every host's stream positions after this step's batch
                    saved_record["data"]["state"] = T.gather_rows(last_data_state).tolist()
                checkpointer.save(state, saved_record, force=True)
                progress.write(f"checkpoint saved at step {done}")
                window_start = time.perf_counter()  # nor is checkpointing
            if evaluating:
                run_eval(done)
                window_start = time.perf_counter()  # evaluation time is not training time
            result["final_step"] = done
    finally:
        data_iter.close()
        progress.close()
        if checkpointer is not None:
            checkpointer.close()
        if metrics_file is not None:
            metrics_file.close()

    if args.export and result["final_step"] == args.steps:
        params = T.model_params(T.gather_params(state.params))  # every host takes part
        if main_process:
            model.save_pretrained(args.export, params=params)
        progress.write(f"exported the final weights to {args.export}")
    return result


def main(argv: list[str] | None = None) -> int:
    import sys

    from clip_core.shards import ShardError
    from clip_flax.data import DataError
    from clip_flax.training import HostsDisagree

    try:
        run(argv)
    except (DataError, ShardError, HostsDisagree, FileNotFoundError) as e:
        print(f"clip-finetune-flax: error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
