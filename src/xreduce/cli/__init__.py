"""Console scripts of xreduce."""
