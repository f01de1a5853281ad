"""pyopencl glue of xreduce: device choice, program cache, buffers.

Every OpenCL back end of xreduce goes through these few functions:

- :func:`get_context` picks a device (``"gpu"``, ``"cpu"``, ``"any"`` or
  ``(platform_id, device_id)``; ``None`` reads the environment variable
  ``XREDUCE_OPENCL_DEVICE``) and returns a cached :class:`pyopencl.Context`.
- :func:`build_program` compiles one ``.cl`` file of the ``opencl/`` folder with a set of
  ``-D`` defines, once per (context, file, defines).
- :func:`get_queue`, :func:`to_device`, :func:`empty` are small buffer helpers.
- :class:`OpenCLUnavailableError` is raised, with a message naming pyopencl and PoCL, when
  there is no pyopencl, no driver, no platform or no matching device.

Example
-------
>>> from xreduce import opencl
>>> ctx = opencl.get_context("any")                          # doctest: +SKIP
>>> prg = opencl.build_program(ctx, "median.cl", {"WINDOW_MAX": 128})  # doctest: +SKIP
"""
from __future__ import annotations

import os
import threading
import weakref
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

__all__ = [
    "OpenCLUnavailableError",
    "DeviceSpec",
    "available",
    "get_context",
    "get_queue",
    "build_program",
    "kernel_source",
    "to_device",
    "empty",
]

DeviceSpec = Union[None, str, tuple[int, int]]

ENV_DEVICE = "XREDUCE_OPENCL_DEVICE"

_INSTALL_HINT = (
    "xreduce's OpenCL back end needs pyopencl (`pip install pyopencl`) and an OpenCL driver; "
    "on a machine without a GPU driver install PoCL, the portable CPU driver "
    "(`apt-get install pocl-opencl-icd`, or `conda install -c conda-forge pocl`)."
)


class OpenCLUnavailableError(RuntimeError):
    """No usable OpenCL: pyopencl missing, no driver/platform, or no matching device."""

    def __init__(self, reason: str):
        super().__init__(f"{reason}. {_INSTALL_HINT}")
        self.reason = reason


def _import_pyopencl():
    try:
        import pyopencl as cl
    except ImportError as exc:  # pragma: no cover - pyopencl is installed in CI
        raise OpenCLUnavailableError(f"pyopencl cannot be imported ({exc})") from exc
    return cl


def _platforms(cl) -> list:
    try:
        platforms = cl.get_platforms()
    except cl.Error as exc:  # PLATFORM_NOT_FOUND_KHR when no ICD is installed
        raise OpenCLUnavailableError(f"no OpenCL platform found ({exc})") from exc
    if not platforms:
        raise OpenCLUnavailableError("no OpenCL platform found")
    return platforms


def _devices(platform, cl) -> list:
    try:
        return platform.get_devices()
    except cl.Error:  # DEVICE_NOT_FOUND on an empty platform
        return []


def _parse_spec(device: DeviceSpec) -> str | tuple[int, int]:
    """Normalise a device specification to "gpu"/"cpu"/"any" or a (platform, device) pair."""
    if device is None:
        device = os.environ.get(ENV_DEVICE, "any").strip() or "any"
        source = f"environment variable {ENV_DEVICE}"
    else:
        source = "device"
    if isinstance(device, str):
        text = device.strip().lower()
        if text in ("gpu", "cpu", "any"):
            return text
        kind, _, index = text.partition(":")
        if kind in ("gpu", "cpu", "any") and index.strip().isdigit():
            return f"{kind}:{int(index)}"  # the index-th device of that kind
        for sep in (",", ":"):
            if sep in text:
                parts = text.split(sep)
                if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
                    return int(parts[0]), int(parts[1])
        raise ValueError(
            f"{source}: expected 'gpu', 'cpu', 'any', 'gpu:N', 'cpu:N' or "
            f"'platform_id,device_id', got {device!r}"
        )
    if (
        isinstance(device, (tuple, list))
        and len(device) == 2
        and all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in device)
    ):
        return int(device[0]), int(device[1])
    raise TypeError(
        f"device: expected None, 'gpu', 'cpu', 'any' or a (platform_id, device_id) pair of "
        f"ints, got {device!r}"
    )


def _find_device(spec: str | tuple[int, int]):
    cl = _import_pyopencl()
    platforms = _platforms(cl)
    if isinstance(spec, tuple):
        pid, did = spec
        if not 0 <= pid < len(platforms):
            raise OpenCLUnavailableError(
                f"no OpenCL platform {pid}: {len(platforms)} platform(s) exist"
            )
        devices = _devices(platforms[pid], cl)
        if not 0 <= did < len(devices):
            raise OpenCLUnavailableError(
                f"no device {did} on OpenCL platform {pid} ({platforms[pid].name!r} has "
                f"{len(devices)} device(s))"
            )
        return devices[did]
    spec, _, index = spec.partition(":")
    wanted = {"gpu": cl.device_type.GPU, "cpu": cl.device_type.CPU}.get(spec)
    order = ("gpu", "accelerator", "cpu") if spec == "any" else (spec,)
    found = [d for p in platforms for d in _devices(p, cl)]
    if wanted is not None:
        found = [d for d in found if d.type & wanted]
    if not found:
        raise OpenCLUnavailableError(f"no OpenCL device of type {spec!r} found")

    def rank(dev) -> int:
        kinds = {
            "gpu": cl.device_type.GPU,
            "accelerator": cl.device_type.ACCELERATOR,
            "cpu": cl.device_type.CPU,
        }
        for i, name in enumerate(order):
            if dev.type & kinds[name]:
                return i
        return len(order)

    if index:
        ranked = sorted(found, key=rank)  # stable: platform order within a kind
        if int(index) >= len(ranked):
            raise OpenCLUnavailableError(
                f"no OpenCL device {spec}:{index}: {len(ranked)} device(s) of type {spec!r}")
        return ranked[int(index)]
    return min(found, key=rank)  # stable: first device of the best kind


_lock = threading.RLock()
_contexts: dict[Any, Any] = {}
_queues: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_programs: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def get_context(device: DeviceSpec = None):
    """Return a cached OpenCL context on the chosen device.

    Parameters
    ----------
    device : None, "gpu", "cpu", "any", "gpu:N", "cpu:N" or (platform_id, device_id)
        ``None`` reads ``XREDUCE_OPENCL_DEVICE`` (same values; a pair is written
        ``"0,1"``), defaulting to ``"any"``, which prefers a GPU, then an accelerator, then
        a CPU device; ``"gpu:1"`` is the second GPU (in platform order).

    Returns
    -------
    pyopencl.Context
        The same object for the same device on every call.

    Raises
    ------
    OpenCLUnavailableError
        pyopencl, the platform or the device is missing.
    ValueError, TypeError
        ``device`` is not one of the accepted forms.

    Example
    -------
    >>> ctx = get_context("cpu")        # doctest: +SKIP
    >>> ctx.devices[0].name             # doctest: +SKIP
    'pthread-skylake-avx512-Intel(R) Xeon(R) Processor'
    """
    spec = _parse_spec(device)
    with _lock:
        if spec not in _contexts:
            cl = _import_pyopencl()
            dev = _find_device(spec)
            try:
                _contexts[spec] = cl.Context([dev])
            except cl.Error as exc:
                raise OpenCLUnavailableError(
                    f"cannot create an OpenCL context on {dev.name!r} ({exc})"
                ) from exc
        return _contexts[spec]


def available(device: DeviceSpec = None) -> bool:
    """True when :func:`get_context` would succeed for ``device``."""
    try:
        get_context(device)
    except OpenCLUnavailableError:
        return False
    return True


def get_queue(context):
    """Return one cached in-order command queue of ``context`` (thread-safe by OpenCL 1.2)."""
    cl = _import_pyopencl()
    with _lock:
        queue = _queues.get(context)
        if queue is None:
            queue = cl.CommandQueue(context)
            _queues[context] = queue
        return queue


def _kernel_dirs() -> list:
    """Where kernel sources may live: the installed package data, then the source tree."""
    dirs: list = []
    try:
        dirs.append(resources.files(__name__).joinpath("kernels"))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover
        pass
    # Editable installs (meson-python) map the package to src/xreduce; a .cl file added
    # since the last (re)configure is only in the top-level opencl/ folder of the checkout.
    dirs.append(Path(__file__).resolve().parents[3] / "opencl")
    return dirs


def kernel_source(filename: str) -> str:
    """Return the text of the OpenCL kernel file ``filename`` (e.g. ``"median.cl"``).

    Looked up in the installed ``xreduce/opencl/kernels/`` folder, then, for editable
    installs, in the ``opencl/`` folder of the source tree.
    """
    if not isinstance(filename, str) or "/" in filename or not filename.endswith(".cl"):
        raise ValueError(f"filename: expected a bare '*.cl' file name, got {filename!r}")
    for folder in _kernel_dirs():
        candidate = folder.joinpath(filename)
        try:
            if candidate.is_file():
                return candidate.read_text(encoding="utf-8")
        except OSError:  # pragma: no cover
            continue
    raise FileNotFoundError(
        f"OpenCL kernel file {filename!r} not found in " + ", ".join(map(str, _kernel_dirs()))
    )


def _define_options(defines: Mapping[str, Any] | None) -> tuple[str, ...]:
    if defines is None:
        return ()
    if not isinstance(defines, Mapping):
        raise TypeError(f"defines: expected a mapping name -> value, got {type(defines).__name__}")
    options = []
    for name in sorted(defines):
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"defines: expected identifier names, got {name!r}")
        value = defines[name]
        if isinstance(value, bool):
            value = int(value)
        options.append(f"-D{name}" if value is None else f"-D{name}={value}")
    return tuple(options)


def build_program(context, filename: str, defines: Mapping[str, Any] | None = None):
    """Compile (once) and return the program of kernel file ``filename`` for ``context``.

    Parameters
    ----------
    context : pyopencl.Context
        From :func:`get_context`.
    filename : str
        A file of the ``opencl/`` folder, e.g. ``"median.cl"``.
    defines : mapping, optional
        Preprocessor macros passed as ``-DNAME=value`` (``None`` value: ``-DNAME``).

    Returns
    -------
    pyopencl.Program
        Built program, cached per (context, filename, defines).

    Example
    -------
    >>> prg = build_program(get_context(), "median.cl", {"WINDOW_MAX": 32})  # doctest: +SKIP
    >>> kernel = prg.moving_median_f32                                       # doctest: +SKIP
    """
    cl = _import_pyopencl()
    options = _define_options(defines)
    key = (filename, options)
    with _lock:
        cache = _programs.setdefault(context, {})
        program = cache.get(key)
        if program is None:
            source = kernel_source(filename)
            try:
                program = cl.Program(context, source).build(options=list(options))
            except cl.RuntimeError as exc:
                raise RuntimeError(
                    f"OpenCL build of {filename} with {list(options)} failed:\n{exc}"
                ) from exc
            cache[key] = program
        return program


def to_device(queue, array: np.ndarray):
    """Copy a host array to a new C-contiguous :class:`pyopencl.array.Array`."""
    import pyopencl.array as cla

    return cla.to_device(queue, np.ascontiguousarray(array))


def empty(queue, shape, dtype):
    """Allocate an uninitialised :class:`pyopencl.array.Array` on the queue's device."""
    import pyopencl.array as cla

    return cla.empty(queue, shape, np.dtype(dtype))
