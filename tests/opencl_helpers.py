"""OpenCL test helper: a context on PoCL (or any device), or a skip only where allowed.

OpenCL tests must run in CI (which sets ``XREDUCE_REQUIRE_OPENCL``): they skip only when no
OpenCL platform exists AND that variable is unset; when it is set, a missing platform fails.
"""
import os

import pytest


def require_opencl_context():
    """Return an OpenCL context (``XREDUCE_OPENCL_DEVICE`` or "any"), or skip/fail as above."""
    from xreduce import opencl

    try:
        return opencl.get_context()
    except opencl.OpenCLUnavailableError as exc:
        if os.environ.get("XREDUCE_REQUIRE_OPENCL"):
            pytest.fail(f"XREDUCE_REQUIRE_OPENCL is set but OpenCL is unavailable: {exc}")
        pytest.skip(f"no OpenCL platform: {exc}")
