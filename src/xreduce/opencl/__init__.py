"""pyopencl glue of xreduce: device choice, program cache, buffers."""
