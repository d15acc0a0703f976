"""A child process for the fault tests (tests/test_hardening_writes.py): runs one save or conversion,
optionally SIGKILLing itself at the K-th file-system event, or runs a list of saves on a nearly full
disk, and prints a JSON report on its last line.

    python -m tests.fault_child '{"op": "save", "folder": ..., "seed": 1, "formats": [...], "kill_at": 7}'

Events are the calls that make a save durable or visible: os.replace / os.rename / os.remove /
os.unlink / os.rmdir / os.fsync / shutil.rmtree and clip_core.files' renameat2. ``kill_at`` = K kills
the process just before the K-th event (K = 0: no kill; the report gives the number of events), so a
test can stop a save between any two of its steps, the two renames of a swap included.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sys
import traceback

from tools.fuzz_checkpoints import CONFIG  # a small model with many tensors


def model(seed: int, scale: int = 1):
    """(config, state): the seed changes the weights and a config field that leaves every shape alone,
    so that a config of one seed beside the weights of another loads without a shape error."""
    from clip_core.config import CLIPConfig
    from clip_core.weights import random_state

    data = json.loads(json.dumps(CONFIG))
    if scale > 1:
        for tower in ("text_config", "vision_config"):
            data[tower]["hidden_size"] *= scale
            data[tower]["intermediate_size"] *= scale
    data["logit_scale_init_value"] = 1.0 + seed
    config = CLIPConfig.from_dict(data)
    return config, random_state(config, seed=seed)


_events = {"count": 0, "kill_at": 0, "log": []}


def _event(kind):
    def decorate(function):
        def wrapper(*args, **kwargs):
            _events["count"] += 1
            _events["log"].append(kind)
            if _events["count"] == _events["kill_at"]:
                os.kill(os.getpid(), signal.SIGKILL)
            return function(*args, **kwargs)

        return wrapper

    return decorate


def install_kill_switch(kill_at: int) -> None:
    _events["kill_at"] = kill_at
    for name in ("replace", "rename", "remove", "unlink", "rmdir", "fsync"):
        setattr(os, name, _event(name)(getattr(os, name)))
    shutil.rmtree = _event("rmtree")(shutil.rmtree)
    import clip_core.files as files

    if hasattr(files, "_renameat2"):
        files._renameat2 = _event("renameat2")(files._renameat2)


def disable_renameat2() -> None:
    """Pretend the file system has no renameat2 flags, to test the portable fallbacks."""
    import clip_core.files as files

    def unsupported(*args, **kwargs):
        raise OSError(errno.EINVAL, "renameat2 flags not supported (test)")

    files._renameat2 = unsupported


def run_one(args: dict) -> dict:
    if args["op"] == "save":
        from clip_core.pretrained import save_pretrained

        config, state = model(args["seed"], args.get("scale", 1))
        save_pretrained(
            args["folder"], config, state, formats=tuple(args["formats"]), max_shard_size=args.get("shard")
        )
    elif args["op"] == "convert":
        from clip_core.conversion import convert

        convert(
            args["source"],
            args["destination"],
            formats=tuple(args["formats"]),
            overwrite=args.get("overwrite", False),
            progress=False,
        )
    else:
        raise ValueError(args["op"])
    return {"ok": True}


def _describe(error: BaseException) -> dict:
    return {
        "type": type(error).__name__,
        "mro": [c.__name__ for c in type(error).__mro__],
        "errno": getattr(error, "errno", None),
        "filename": getattr(error, "filename", None),
        "message": str(error),
    }


def _tree(root: str) -> dict[str, bytes]:
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read().hex()
    return out


def full_disk(args: dict) -> dict:
    """Each case on a disk filled up to ``budget`` free bytes: what was raised, what was left."""
    mount = args["mount"]
    results = []
    for case in args["cases"]:
        before = _tree(mount)
        filler = os.path.join(mount, "filler")
        stat = os.statvfs(mount)
        free = stat.f_bavail * stat.f_frsize
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, free - case["budget"]))
        try:
            run_one(case)
            outcome = {"ok": True}
        except Exception as e:  # noqa: BLE001 - the report says what it was
            outcome = {"ok": False, **_describe(e)}
        os.remove(filler)
        after = _tree(mount)
        if outcome["ok"]:  # a success may add or change only its own destination
            target = case.get("folder") or case.get("destination")
            prefix = os.path.relpath(target, mount) + os.sep
            before = {k: v for k, v in before.items() if not k.startswith(prefix)}
            after = {k: v for k, v in after.items() if not k.startswith(prefix)}
        outcome["changed"] = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        results.append({"case": case, **outcome})
        if outcome["ok"] and case["op"] == "convert":
            shutil.rmtree(case["destination"])
    return {"results": results}


def main() -> None:
    args = json.loads(sys.argv[1])
    if args.get("no_renameat2"):
        disable_renameat2()
    if args["op"] == "full_disk":
        report = full_disk(args)
    else:
        install_kill_switch(args.get("kill_at", 0))
        try:
            report = run_one(args)
        except Exception as e:  # noqa: BLE001
            report = {"ok": False, **_describe(e), "traceback": traceback.format_exc()}
        report["events"] = _events["count"]
        report["log"] = _events["log"]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
