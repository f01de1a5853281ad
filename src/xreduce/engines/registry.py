"""Method parsing, engine keys and the engine cache: how a call finds its engine.

A *method* names a way to integrate: ``(split, algorithm, implementation)``, e.g.
``("bbox", "csr", "cython")``, optionally with a device *target* as a fourth part or a
``target=`` argument (``("bbox", "csr", "opencl", "gpu:0")``, ``target="cpu"``). The
implementations are registered here under ``(algorithm, implementation)`` with the splits
they support and a builder; the built-in ones name their builder as ``"module:function"`` and
are imported on first use, so this module imports no back end (no import cycles).

An :class:`EngineKey` holds everything an engine depends on (the geometry is the
integrator's own), the device included; the :class:`EngineCache` builds each missing engine
once, per key: a thread asking for a cached engine never waits for another key's build.

Example
-------
>>> parse_method("full_csr")
('full', 'csr', 'cython')
>>> parse_method_target(("bbox", "csr", "opencl", "gpu:0"))
(('bbox', 'csr', 'opencl'), 'gpu:0')
>>> cache = EngineCache(max_engines=4)
>>> cache.get_or_create("k", lambda: 42)
42
"""
from __future__ import annotations

import importlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

SPLITS = ("no", "bbox", "pseudo", "full")
DEFAULT_METHOD = ("bbox", "csr", "cython")

#: pyFAI-style method names accepted as the algorithm and implementation of a method string.
_ALIASES = {"nosplit": "no", "splitpixel": "full", "ocl": "opencl"}


@dataclass(frozen=True)
class Implementation:
    """A registered way to integrate: which splits it supports and how to build its engine.

    ``build(integrator, key, mask)`` (or ``"module:function"`` naming it) returns an engine
    with ``integrate(FrameArgs, Normalisation) -> Sums``, ``radial_edges``,
    ``azimuthal_edges``, ``nbins`` and ``nbytes``. ``devices``: whether it runs on an OpenCL
    device (and so takes a target); the others run on the host CPU.
    """

    splits: tuple[str, ...]
    build: Callable | str
    devices: bool = False

    def builder(self) -> Callable:
        """The build function (imported on first use when given by name)."""
        if callable(self.build):
            return self.build
        module, name = self.build.split(":")
        return getattr(importlib.import_module(module), name)


IMPLEMENTATIONS: dict[tuple[str, str], Implementation] = {
    ("csr", "cython"): Implementation(SPLITS, "xreduce.engines.cython_csr:build"),
    ("csc", "cython"): Implementation(SPLITS, "xreduce.engines.cython_csc:build"),
    ("histogram", "cython"): Implementation(("no", "bbox"), "xreduce.engines.histogram:build"),
    ("csr", "opencl"): Implementation(SPLITS, "xreduce.engines.opencl:build_opencl", True),
    ("csr", "any"): Implementation(SPLITS, "xreduce.engines.opencl:build_any", True),
}
"""(algorithm, implementation) -> Implementation."""


def register_implementation(algorithm: str, implementation: str, splits: Sequence[str],
                            build: Callable | str, devices: bool = False) -> None:
    """Make ``(split, algorithm, implementation)`` methods available to every integrator."""
    IMPLEMENTATIONS[(algorithm, implementation)] = Implementation(tuple(splits), build,
                                                                  bool(devices))


def valid_methods() -> list[tuple[str, str, str]]:
    """Every (split, algorithm, implementation) the registered implementations support."""
    return [(s, a, i) for (a, i), impl in IMPLEMENTATIONS.items() for s in impl.splits]


def _target_text(target: Any) -> str:
    """A device target as text: "cpu", "gpu", "any", "gpu:0" (the first GPU), "0,1"
    (platform 0, device 1), or a (platform, device) pair."""
    if isinstance(target, (tuple, list)) and len(target) == 2 and all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in target):
        return f"{target[0]},{target[1]}"
    if not isinstance(target, str):
        raise TypeError(f"target: expected a device such as 'cpu', 'gpu', 'gpu:0', 'any' or a "
                        f"(platform, device) pair, got {target!r}")
    text = target.strip().lower()
    kind, _, index = text.partition(":")
    if kind in ("cpu", "gpu", "any") and (not index or index.isdigit()):
        return text
    parts = text.replace(":", ",").split(",")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        return ",".join(p.strip() for p in parts)
    raise ValueError(f"target: expected 'cpu', 'gpu', 'any', 'gpu:N', 'cpu:N' or "
                     f"'platform,device', got {target!r}")


def parse_method_target(method: str | Sequence[Any],
                        target: Any = None) -> tuple[tuple[str, str, str], str | None]:
    """Normalise a method and its device target: ``((split, algorithm, implementation),
    target)``.

    Accepts a tuple ``("bbox", "csr", "cython")``, ``("bbox", "csr")``, ``("bbox", "csr",
    "opencl", "gpu:0")`` or a string ``"bbox_csr_cython"``, ``"bbox_csr"``, ``"bbox"``
    (algorithm csr, implementation cython by default), and pyFAI's ``"csr_ocl"``,
    ``"splitpixel"``, ``"nosplit_csr"``. ``target`` (or the method's fourth part; not both)
    picks the device of an OpenCL implementation; for the host implementations it must be
    None or "cpu". Unknown methods raise ValueError listing the valid ones.

    >>> parse_method_target("bbox_csr_opencl", target="cpu")
    (('bbox', 'csr', 'opencl'), 'cpu')
    """
    if isinstance(method, str):
        parts = [p for p in method.lower().split("_") if p]
    elif isinstance(method, (tuple, list)):
        parts = list(method)
    else:
        raise TypeError(f"method: expected a string or a tuple (split, algorithm, "
                        f"implementation[, target]), got {method!r}")
    if len(parts) == 4:
        if target is not None:
            raise ValueError(f"target: given twice, as the method's fourth part "
                             f"({parts[3]!r}) and as target={target!r}")
        target = parts[3]
        parts = parts[:3]
    parts = [str(p).lower() for p in parts]
    parts = [_ALIASES.get(p, p) for p in parts]
    if parts and parts[0] in ("csr", "csc", "histogram"):  # pyFAI: "csr_ocl": bbox split
        parts.insert(0, "bbox")
    defaults = ["csr", "cython"]
    if 1 <= len(parts) <= 3:
        parts = parts + defaults[len(parts) - 1:]
    found = tuple(parts) if len(parts) == 3 else None
    if found is None or found not in valid_methods():
        names = ", ".join("_".join(m) for m in valid_methods())
        raise ValueError(f"method: expected one of {names} (or a tuple of their parts, with "
                         f"an optional device target), got {method!r}")
    if target is not None:
        target = _target_text(target)
        if not IMPLEMENTATIONS[found[1:]].devices and target != "cpu":
            raise ValueError(f"target: the {found[2]!r} implementation runs on the host CPU; "
                             f"target must be None or 'cpu', got {target!r} (use "
                             f"method=({found[0]!r}, 'csr', 'opencl') for an OpenCL device)")
    return found, target  # type: ignore[return-value]


def parse_method(method: str | Sequence[Any]) -> tuple[str, str, str]:
    """``(split, algorithm, implementation)`` of a method (see :func:`parse_method_target`).

    >>> parse_method("csr_ocl")
    ('bbox', 'csr', 'opencl')
    """
    return parse_method_target(method)[0]


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on (the geometry is the integrator's own).

    ``radial_range`` is in ``unit``, ``azimuth_range`` in degrees, both as given by the user
    (None: the default range). ``npt_azim`` is None for 1D engines. ``device`` is the OpenCL
    target as text (None for host engines; the resolved environment default otherwise).
    """

    algorithm: str
    implementation: str
    split: str
    unit: str
    npt_rad: int
    npt_azim: int | None
    radial_range: tuple[float, float] | None
    azimuth_range: tuple[float, float] | None
    mask_digest: str | None
    device: str | None = None


class _PendingBuild:
    """An engine being built by one thread, waited for by the others asking for its key."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.engine: Any = None
        self.error: BaseException | None = None

    def result(self) -> Any:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.engine


class EngineCache:
    """A thread-safe, bounded cache of engines (least recently used evicted first).

    ``get_or_create`` builds a missing engine outside any shared lock: concurrent first calls
    for one key build it once (the others wait for that key only), and calls for cached or
    other keys never wait. At most ``max_engines`` engines are kept, and engines are dropped
    (oldest first, the newest always kept) while their ``nbytes`` add up to more than
    ``max_bytes`` (None: no byte bound).
    """

    def __init__(self, max_engines: int = 8, max_bytes: int | None = None):
        if isinstance(max_engines, bool) or not isinstance(max_engines, int) or max_engines < 1:
            raise ValueError(f"max_engines: expected an integer >= 1, got {max_engines!r}")
        self.max_engines = max_engines
        self.max_bytes = max_bytes
        self._engines: OrderedDict[Any, Any] = OrderedDict()
        self._building: dict[Any, _PendingBuild] = {}
        self._lock = threading.Lock()

    def get_or_create(self, key: Any, build: Callable[[], Any]) -> Any:
        """The engine for ``key``, built by ``build()`` when missing."""
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                return engine
            pending = self._building.get(key)
            owner = pending is None
            if owner:
                pending = self._building[key] = _PendingBuild()
        if not owner:
            return pending.result()
        try:
            engine = build()
        except BaseException as err:
            with self._lock:
                del self._building[key]
            pending.error = err
            pending.done.set()
            raise
        with self._lock:
            del self._building[key]
            self._engines[key] = engine
            self._evict()
        pending.engine = engine
        pending.done.set()
        return engine

    def _evict(self) -> None:
        while len(self._engines) > self.max_engines:
            self._engines.popitem(last=False)
        if self.max_bytes is not None:
            while len(self._engines) > 1 and self.nbytes > self.max_bytes:
                self._engines.popitem(last=False)

    @property
    def nbytes(self) -> int:
        """Memory held by the cached engines, in bytes (as they report it)."""
        return sum(int(getattr(e, "nbytes", 0)) for e in list(self._engines.values()))

    def put(self, key: Any, engine: Any) -> None:
        """Insert a ready engine (e.g. one loaded from a file)."""
        with self._lock:
            self._engines[key] = engine
            self._engines.move_to_end(key)
            self._evict()

    def items(self) -> list[tuple[Any, Any]]:
        """A snapshot of the cached (key, engine) pairs."""
        with self._lock:
            return list(self._engines.items())

    def clear(self) -> None:
        with self._lock:
            self._engines.clear()

    def __len__(self) -> int:
        return len(self._engines)
