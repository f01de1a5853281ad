"""The OpenCL glue: device choice, program cache, kernel lookup, clear errors."""
import numpy as np
import pytest

from opencl_helpers import require_opencl_context
from xreduce import opencl


def test_context_is_cached_and_env_is_read(monkeypatch):
    ctx = require_opencl_context()
    assert opencl.get_context() is ctx
    monkeypatch.setenv(opencl.ENV_DEVICE, "0,0")
    assert opencl.get_context() is opencl.get_context((0, 0))
    monkeypatch.setenv(opencl.ENV_DEVICE, "any")
    assert opencl.get_context(None) is opencl.get_context("any")


@pytest.mark.parametrize("bad", ["tpu", "0;1", "1,x"])
def test_bad_device_string_names_the_argument(bad):
    with pytest.raises(ValueError, match="device"):
        opencl.get_context(bad)


@pytest.mark.parametrize("bad", [3.0, (0,), (0, 1, 2), (True, 0)])
def test_bad_device_type(bad):
    with pytest.raises(TypeError, match="device"):
        opencl.get_context(bad)


def test_bad_env_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(opencl.ENV_DEVICE, "quantum")
    with pytest.raises(ValueError, match="XREDUCE_OPENCL_DEVICE"):
        opencl.get_context()


def test_missing_device_gives_install_hint():
    require_opencl_context()
    with pytest.raises(opencl.OpenCLUnavailableError, match="pocl-opencl-icd") as info:
        opencl.get_context((999, 0))
    assert "pyopencl" in str(info.value)
    assert isinstance(info.value, RuntimeError)


def test_no_platform_error(monkeypatch):
    """Simulate a machine without any ICD: the error names pyopencl and PoCL."""
    import pyopencl as cl

    def no_platform():
        raise cl.LogicError("clGetPlatformIDs failed: PLATFORM_NOT_FOUND_KHR")

    monkeypatch.setattr(cl, "get_platforms", no_platform)
    with pytest.raises(opencl.OpenCLUnavailableError, match="PoCL"):
        opencl._find_device("any")


def test_kernel_source_found_and_bad_names_rejected():
    text = opencl.kernel_source("median.cl")
    assert "__kernel" in text
    with pytest.raises(FileNotFoundError):
        opencl.kernel_source("no_such_kernel.cl")
    with pytest.raises(ValueError, match="filename"):
        opencl.kernel_source("../median.cl")


def test_build_program_cached_per_defines():
    ctx = require_opencl_context()
    a = opencl.build_program(ctx, "median.cl", {"WINDOW_MAX": 8})
    b = opencl.build_program(ctx, "median.cl", {"WINDOW_MAX": 8})
    c = opencl.build_program(ctx, "median.cl", {"WINDOW_MAX": 16})
    assert a is b
    assert a is not c
    with pytest.raises(ValueError, match="defines"):
        opencl.build_program(ctx, "median.cl", {"not an identifier": 1})


def test_buffer_round_trip():
    ctx = require_opencl_context()
    queue = opencl.get_queue(ctx)
    assert opencl.get_queue(ctx) is queue
    host = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]  # not contiguous
    dev = opencl.to_device(queue, host)
    np.testing.assert_array_equal(dev.get(), host)
    buf = opencl.empty(queue, (5,), np.int32)
    assert buf.shape == (5,) and buf.dtype == np.int32
