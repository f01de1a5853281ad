"""The ``segment`` step of ``xreduce-dct``: YAML section, runner and subcommand."""
import argparse

import numpy as np
import pytest

from xreduce.dct.config import ConfigError, dump_section, load_section
from xreduce.dct.difspot import properties, read_difspots
from xreduce.dct.segment import segment
from xreduce.dct.segment_cli import TEMPLATE, SegmentConfig, add_parser, run_segment

h5py = pytest.importorskip("h5py")


@pytest.fixture
def stack_file(tmp_path, rng):
    """A small HDF5 stack with three Gaussian spots on noise."""
    shape = (20, 32, 32)
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    stack = rng.normal(0, 1.0, shape)
    for centre, amplitude in (((5, 8, 8), 80.0), ((12, 20, 24), 50.0), ((17, 28, 6), 30.0)):
        stack += amplitude * np.exp(-0.5 * sum(((g - c) / 1.6) ** 2 for g, c in zip(grids, centre)))
    stack = stack.astype(np.float32)
    path = tmp_path / "pre.h5"
    with h5py.File(path, "w") as h5:
        h5["entry/data"] = stack
    return stack, f"{path}::/entry/data"


def config_text(url, output, **extra):
    """YAML of a segment section; ``extra`` keys replace or add values (YAML text)."""
    keys = {"input": f"'{url}'", "output": f"'{output}'", "seed_threshold": "10.0", "tau": "0.2",
            "bb_max": "[4, 6, 6]", "chunk_frames": "6"}
    keys.update({key: str(value) for key, value in extra.items()})
    return "segment:\n" + "".join(f"  {key}: {value}\n" for key, value in keys.items())


def test_template_is_valid():
    """The printed template loads, and dumping it gives every key back."""
    cfg = load_section(TEMPLATE, "segment")
    assert isinstance(cfg, SegmentConfig)
    assert cfg.bb_max == [20, 40, 40] and cfg.grow_limits == [7.0, 20.0]
    assert load_section(dump_section(cfg), "segment") == cfg


def test_subcommand_writes_the_difspots(tmp_path, stack_file, capsys):
    """`xreduce-dct segment config.yml` gives the file `segment` + `write_difspots` would."""
    stack, url = stack_file
    output = tmp_path / "spots.h5"
    config = tmp_path / "config.yml"
    config.write_text(config_text(url, output))
    parser = argparse.ArgumentParser(prog="xreduce-dct")
    run = add_parser(parser.add_subparsers(dest="command"))
    assert run(parser.parse_args(["segment", str(config), "--no-progress"])) == 0
    assert "3 difspots" in capsys.readouterr().out
    expected = properties(segment(stack, 10.0, 0.2, (4, 6, 6)))
    table = read_difspots(output)
    assert len(table) == 3
    for name in expected.dtype.names:
        np.testing.assert_array_equal(table[name], expected[name])
    with pytest.raises(FileExistsError, match="output"):
        run_segment(str(config), progress=False)
    config.write_text(config_text(url, output, overwrite="true", min_size=10 ** 6))
    result, _ = run_segment(str(config), progress=False)
    assert len(result) == 0 and len(read_difspots(output)) == 0


def test_interrupted_command_resumes(tmp_path, stack_file, monkeypatch):
    """An interrupted run leaves no difspot file but a checkpoint; running the configuration
    again completes it with the uninterrupted result and removes the checkpoint."""
    import xreduce.dct.segment as segment_module
    from xreduce.dct.segment_cli import checkpoint_path

    stack, url = stack_file
    output = tmp_path / "spots.h5"
    config = tmp_path / "config.yml"
    config.write_text(config_text(url, output, chunk_frames=4))
    grow = segment_module._kernel.grow_blobs
    calls = []

    def failing_grow(*args):
        if len(calls) == 1:
            raise KeyboardInterrupt
        calls.append(1)
        return grow(*args)

    monkeypatch.setattr(segment_module._kernel, "grow_blobs", failing_grow)
    with pytest.raises(KeyboardInterrupt):
        run_segment(str(config), progress=False)
    assert not output.exists() and (tmp_path / ".spots.h5.checkpoint").is_dir()
    assert checkpoint_path(str(output)) == str(tmp_path / ".spots.h5.checkpoint")
    monkeypatch.setattr(segment_module._kernel, "grow_blobs", grow)
    result, _ = run_segment(str(config), progress=False)
    expected = properties(segment(stack, 10.0, 0.2, (4, 6, 6)))
    table = read_difspots(output)
    assert len(result) == len(table) == 3
    for name in expected.dtype.names:
        np.testing.assert_array_equal(table[name], expected[name])
    assert not (tmp_path / ".spots.h5.checkpoint").exists()


def test_template_flag(capsys):
    parser = argparse.ArgumentParser(prog="xreduce-dct")
    run = add_parser(parser.add_subparsers(dest="command"))
    assert run(parser.parse_args(["segment", "--template"])) == 0
    assert capsys.readouterr().out == TEMPLATE


@pytest.mark.parametrize("key, value, match", [
    ("tau", 1.5, "segment.tau"), ("bb_max", 0, "segment.bb_max"),
    ("bb_max", "[1, 2]", "segment.bb_max"), ("grow_limits", "[20, 7]", "segment.grow_limits"),
    ("connectivity", 8, "segment.connectivity"), ("max_size", 0, "segment.max_size"),
    ("compression", "zstd", "segment.compression"), ("colour", "red", "unknown key"),
])
def test_bad_config(key, value, match):
    """Bad values raise ConfigError (a ValueError) naming the key."""
    text = config_text("a.h5::/d", "b.h5", **{key: value})
    with pytest.raises(ConfigError, match=match):
        load_section(text, "segment")
