"""The API fuzz's arguments and its oracle (tests/mpi/workers/api_fuzz.py): how an argument
spec becomes a value, and what every rank's arguments must give: ("valid", the numpy reference),
("invalid", None) when they certainly fail, ("unknown", None) when either is right."""

import numpy as np


def materialize(spec: dict, tf=None):
    """The value of an argument spec, made afresh (a TF tensor when the spec says so and `tf`
    is the module)."""
    kind = spec["kind"]
    if kind != "array":
        return {
            "none": None, "dict": {"lr": 0.1, "k": [1, 2]}, "floats": [1.5, -2.0, 3.25],
            "ragged": [[1.0], [2.0, 3.0]], "str": "text", "bigint": 2**70, "nan": float("nan"),
            "lambda": lambda: 1, "tuple": (1, "a", None),
        }[kind]  # fmt: skip
    dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
    rng = np.random.default_rng(spec["seed"])
    n = int(np.prod(shape, dtype=np.int64))
    if dtype.kind == "f" or dtype.kind == "c":
        flat = rng.standard_normal(n) * (1e30 if spec["special"] == "huge" else 1)
        if n and spec["special"] in ("nan", "inf"):
            flat[0] = np.nan if spec["special"] == "nan" else np.inf
        flat = flat.astype(dtype)
    elif dtype.kind in "iu":
        flat = rng.integers(0, 5, n).astype(dtype)
    elif dtype.kind == "b":
        flat = rng.random(n) < 0.5
    elif dtype.kind == "U":
        flat = np.array(["ab", "c", "xyz"] * n, dtype)[:n]
    elif dtype.kind == "M":
        flat = np.arange(n).astype(dtype)
    else:
        flat = np.empty(n, object)
        flat[:] = [{"i": i} for i in range(n)]
    a = flat.reshape(shape)
    if spec["layout"] == "strided" and a.ndim:
        a = np.stack([a, a], axis=-1)[..., 0]
    elif spec["layout"] == "readonly":
        a = a.copy()
        a.flags.writeable = False
    if spec["tf"] and tf is not None and dtype.kind in "fiub":
        return tf.constant(a)
    return a


def is_name(n) -> bool:
    return isinstance(n, str)


def is_root(r, size: int) -> bool:
    return isinstance(r, int) and not isinstance(r, bool) and 0 <= r < size


def plain_array(spec: dict) -> bool:
    return spec["kind"] == "array" and not spec["tf"]


def expectation(fn: str, every: list[dict], size: int, rank: int, tf=None):
    """("valid", reference), ("invalid", None) or ("unknown", None) for these per-rank args."""
    same = lambda key: all(  # noqa: E731 - True == 1, but not as an argument
        a[key] == every[0][key] and type(a[key]) is type(every[0][key]) for a in every
    )
    if fn == "config":
        return "unknown", None
    names_ok = all(is_name(a["name"]) for a in every) and same("name")
    if fn != "checkpoint" and any(not is_name(a["name"]) for a in every):
        return "invalid", None
    if fn == "checkpoint":
        step, keep = every[0]["step"], every[0]["keep"]
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (step, keep))
        valid = same("step") and same("keep") and ints and step >= 0 and keep >= 0
        if valid:
            return "valid", np.arange(3) + rank
        return ("invalid", None) if not same("step") else ("unknown", None)
    if fn == "barrier":
        return ("valid", None) if names_ok else ("invalid", None)
    specs = [a["x"] for a in every]
    if fn in ("allgather_object", "broadcast_object"):
        roots_ok = fn == "allgather_object" or (
            all(is_root(a["root"], size) for a in every) and same("root")
        )
        if (
            not roots_ok
            and fn == "broadcast_object"
            and any(not is_root(a["root"], size) for a in every)
        ):
            return "invalid", None
        if not names_ok or not roots_ok:
            return "invalid", None
        if any(
            s["kind"] in ("lambda",)
            for s in (specs if fn == "allgather_object" else [specs[every[0]["root"]]])
        ):
            return "invalid", None
        if any(s.get("tf") for s in specs):
            return "unknown", None
        objs = [materialize(s, tf) for s in specs]
        return "valid", (objs if fn == "allgather_object" else objs[every[0]["root"]])
    if not all(plain_array(s) for s in specs):
        if fn == "broadcast" and all(s["kind"] in ("dict", "none") for s in specs):
            r = every[0]["root"]
            if names_ok and same("root") and is_root(r, size):
                return "valid", materialize(specs[r], tf)
        return "unknown", None
    arrays = [materialize(s, tf) for s in specs]
    layouts_c = all(a.flags.c_contiguous and a.flags.writeable for a in arrays)
    same_type = all(a.dtype == arrays[0].dtype and a.shape == arrays[0].shape for a in arrays)
    objects = any(a.dtype.hasobject for a in arrays)
    if fn == "allgather":
        if objects or any(a.ndim == 0 for a in arrays):
            return "invalid", None
        if not (
            names_ok
            and all(
                a.dtype == arrays[0].dtype and a.shape[1:] == arrays[0].shape[1:] for a in arrays
            )
        ):
            return "invalid", None
        return "valid", np.concatenate(arrays)
    if fn == "broadcast":
        r = every[0]["root"]
        if objects:
            if (
                all(a.dtype.hasobject for a in arrays)
                and names_ok
                and same("root")
                and is_root(r, size)
            ):
                return "valid", arrays[r]
            return "unknown", None
        if not (names_ok and same_type and same("root") and is_root(r, size) and layouts_c):
            return "invalid", None
        return "valid", arrays[r]
    # allreduce, allreduce_async, weighted
    if objects or not layouts_c or not same_type or not names_ok:
        return "invalid", None
    kind = arrays[0].dtype.kind
    if fn == "weighted":
        if kind != "f" or arrays[0].dtype.itemsize < 4:
            return "invalid", None
        ws = [arrays[0].dtype.type(a["weight"]) for a in every]
        if not all(np.isfinite(ws)):
            return "invalid", None
        with np.errstate(all="ignore"):
            scaled = [a * w for a, w in zip(arrays, ws)]
        if not all(np.isfinite(s).all() for s in scaled) or not all(
            np.isfinite(a).all() for a in arrays
        ):
            return "unknown", None
        return "valid", np.asarray(sum(s.astype(np.float64) for s in scaled)).astype(
            arrays[0].dtype
        )
    op = every[0]["op"]
    if not (
        same("op") and isinstance(op, str) and op in ("average", "sum", "min", "max", "product")
    ):
        return "invalid", None
    if fn == "allreduce_async" and (
        op not in ("average", "sum") or kind != "f" or arrays[0].dtype.itemsize < 4
    ):
        return "invalid", None
    if (
        kind not in "fiub"
        or (kind == "b" and op not in ("min", "max"))
        or (kind in "iu" and op == "average")
    ):
        return "invalid", None
    parts = np.stack(arrays)
    with np.errstate(all="ignore"):
        if op in ("sum", "average"):
            acc = parts.astype(np.float64) if kind == "f" else parts
            ref = acc.sum(axis=0) if op == "sum" else acc.mean(axis=0)
        elif op == "product":
            ref = parts.prod(axis=0)
        else:
            ref = parts.min(axis=0) if op == "min" else parts.max(axis=0)
        return "valid", np.asarray(ref).astype(arrays[0].dtype)


def matches(value, ref) -> bool:
    """``value`` equals ``ref`` (floats within a tolerance, NaN equal to NaN), recursively."""
    if isinstance(ref, np.ndarray):
        value = np.asarray(value)
        if value.shape != ref.shape or value.dtype != ref.dtype:
            return False
        if ref.dtype.hasobject:
            return all(matches(a, b) for a, b in zip(value.reshape(-1), ref.reshape(-1)))
        if ref.dtype.kind in "fc":
            with np.errstate(all="ignore"):
                return bool(np.allclose(value, ref, rtol=1e-3, atol=1e-6, equal_nan=True))
        return bool(np.array_equal(value, ref))
    if isinstance(ref, list | tuple):
        return (
            type(value) is type(ref)
            and len(value) == len(ref)
            and all(matches(a, b) for a, b in zip(value, ref))
        )
    if isinstance(ref, dict):
        return (
            isinstance(value, dict)
            and value.keys() == ref.keys()
            and all(matches(value[k], ref[k]) for k in ref)
        )
    if isinstance(ref, float) and ref != ref:
        return isinstance(value, float) and value != value
    return type(value) is type(ref) and value == ref
