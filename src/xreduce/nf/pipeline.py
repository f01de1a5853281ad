"""NF-HEDM reconstruction from a MIDAS parameter file: multi-resolution fitting with resume.

Stages (doc/nf_fit.md, "Pipeline"), with ``GridRefactor start scale nloops``:

- ``loop_0_initial``: grid of edge ``start``, every voxel screened against the full list
  (``SeedOrientationsAll``, else ``SeedOrientations``, else a 1.5 deg fundamental-zone grid);
  grains clustered.
- for k = 1 .. nloops - 1, grid edge ``start / scale**k``:
  ``loop_k_seeded`` (seeds: the grains of the previous loop), ``loop_k_unseeded`` (voxels below
  ``MinConfidence`` refitted against the full list), ``loop_k_merge`` (the better of the two
  per voxel; grains clustered).

Without ``GridRefactor`` the run has one stage, ``loop_0_initial``, fitted with
``SeedOrientations`` on the parameter file's grid.

Every finished stage is committed to the pipeline HDF5 file (``pipeline.h5`` in the output
folder) by an atomic rewrite: ``/pipeline_state/completed_stages/{0..}`` names the stages in
order, ``/stages/<name>`` holds their results, ``/provenance`` the parameter text and versions.
A run given ``resume`` starts at the first unfinished stage; ``restart_from`` drops that stage
and the ones after it first. The file is NeXus: ``/entry/map`` (NXdata, scatter of confidence
over x, y) holds the latest merged map.

Example
-------
>>> from xreduce.nf.pipeline import stage_names
>>> stage_names(3)
['loop_0_initial', 'loop_1_seeded', 'loop_1_unseeded', 'loop_1_merge', 'loop_2_seeded', \
'loop_2_unseeded', 'loop_2_merge']
"""
from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .fit import FAST_PATH, FitResult, fit_orientations
from .grains import Grains, cluster_grains, write_grains_csv
from .grid import Grid, grid_from_parameters
from .overlap import OverlapModel
from .params import NFParameters
from .reflections import reflections_from_parameters
from .spots import NFGeometry

__all__ = ["run_pipeline", "stage_names", "completed_stages", "PipelineSummary",
           "load_model", "extra_value"]

log = logging.getLogger("xreduce.nf")


def stage_names(n_loops: int) -> list[str]:
    """Stage names of a run with ``n_loops`` resolution loops (1 = no refinement loops)."""
    names = ["loop_0_initial"]
    for k in range(1, int(n_loops)):
        names += [f"loop_{k}_seeded", f"loop_{k}_unseeded", f"loop_{k}_merge"]
    return names


def extra_value(params: NFParameters, key: str, kind=float, default=None):
    """A MIDAS key :class:`NFParameters` has no typed field for (kept in ``params.extra``),
    e.g. ``MinMisoNSaves``."""
    tokens = params.extra.get(key)
    if not tokens:
        return default
    try:
        return kind(float(tokens[0])) if kind is not str else tokens[0]
    except ValueError:
        raise ValueError(f"params: key {key!r}: expected a number, got {tokens[0]!r}") from None


@dataclass
class PipelineSummary:
    """What a run did: per-stage times, the final map's size and quality, the grains."""

    output_directory: str
    pipeline_file: str
    stage_seconds: dict = field(default_factory=dict)
    skipped_stages: list = field(default_factory=list)
    n_voxels: int = 0
    n_fitted: int = 0
    mean_confidence: float = 0.0
    n_grains: int = 0

    def text(self) -> str:
        lines = [f"NF reconstruction in {self.output_directory}",
                 f"  voxels fitted: {self.n_fitted} of {self.n_voxels}",
                 f"  mean confidence (fitted voxels): {self.mean_confidence:.4f}",
                 f"  grains: {self.n_grains}"]
        for name in self.skipped_stages:
            lines.append(f"  {name:<20s} already done (resumed)")
        for name, sec in self.stage_seconds.items():
            lines.append(f"  {name:<20s} {sec:9.1f} s")
        lines.append(f"  pipeline state: {self.pipeline_file}")
        return "\n".join(lines)


def _output_directory(params: NFParameters) -> Path:
    out = params.output_directory or params.data_directory
    if not out:
        raise ValueError("params: OutputDirectory or DataDirectory is needed for the outputs")
    out = Path(out)
    if not out.is_dir():
        raise ValueError(f"params: output folder {str(out)!r} does not exist")
    return out


#: Folder (under the output folder) where image processing keeps its finished pieces until the
#: whole run is done, so that an interrupted run resumes without processing the frames again.
IMAGES_CHECKPOINT = "nf_images.partial"


def load_model(params: NFParameters, skip_image_processing: bool = False,
               progress: bool = True, num_threads: int = 0,
               checkpoint_dir: str | os.PathLike | None = None) -> OverlapModel:
    """The overlap model of a parameter set: geometry, reflections and the lit pixels.

    With ``skip_image_processing`` or ``PrecomputedSpotsInfo 1`` the lit pixels are read from
    ``SpotsInfo.bin`` (OutputDirectory, else DataDirectory); otherwise the raw frames are
    processed (:func:`xreduce.nf.images.process_images`, keeping finished pieces in
    ``checkpoint_dir``) and the result is written to ``SpotsInfo.bin`` in the output folder,
    as MIDAS does.
    """
    from .images import process_images, stack_shape
    from .spotsinfo import read_spots_info, write_spots_info

    shape = stack_shape(params)   # one rule for frames per distance and detector size
    geometry = NFGeometry.from_parameters(params)
    reflections = reflections_from_parameters(params)
    folders = [d for d in (params.output_directory, params.data_directory) if d]
    if skip_image_processing or params.precomputed_spots_info == 1:
        paths = [Path(d) / "SpotsInfo.bin" for d in folders]
        found = [p for p in paths if p.is_file()]
        if not found:
            raise ValueError(f"SpotsInfo.bin: not found in {[str(p) for p in paths]} "
                             f"(--skip-image-processing / PrecomputedSpotsInfo 1 needs it)")
        words = read_spots_info(found[0], shape)
    else:
        words = process_images(params, progress=progress, num_threads=num_threads,
                               checkpoint_dir=checkpoint_dir)
        write_spots_info(_output_directory(params) / "SpotsInfo.bin", words)
    if not np.any(words):
        raise ValueError("images: no lit pixel in the binary images (empty or missing data)")
    return OverlapModel(geometry, reflections, words, shape[1], params.edge_length_um)


def _check_grid(grid: Grid, model: OverlapModel, params: NFParameters) -> None:
    """Errors and warnings about the grid before any fitting."""
    if len(grid) == 0:
        raise ValueError("grid: no voxel left (Rsample, GridSize, GridMask or TomoImage)")
    geo = model.geometry
    ny, nz = geo.detector_shape
    bcy, bcz = geo.bc_px[0]
    reach_px = np.hypot(grid.x_um, grid.y_um) / geo.px_um
    room_px = min(bcy, ny - bcy)
    if reach_px.min() > room_px:
        raise ValueError(f"grid: every voxel is more than {room_px:.0f} px from the beam "
                         f"centre on the detector (nearest {reach_px.min() * geo.px_um:.1f} um "
                         f"from the rotation axis): the grid lies outside the beam/detector")
    if params.edge_length_um is None and grid.edge_um / geo.px_um > 8:
        warnings.warn(f"EdgeLength: not given, so the footprint is the {grid.edge_um:g} um "
                      f"grid triangle, {grid.edge_um / geo.px_um:.0f} px on a side; set "
                      f"EdgeLength to keep footprints small", UserWarning, stacklevel=3)


def _full_seeds(params: NFParameters, space_group: int, prefer_all: bool = True) -> np.ndarray:
    """SeedOrientationsAll (else SeedOrientations) for unseeded stages; SeedOrientations first
    for a single-resolution run; a 1.5 deg fundamental-zone grid when neither is given."""
    from .orientations import fundamental_zone_grid, read_seed_file

    if prefer_all:
        path = params.seed_orientations_all or params.seed_orientations
    else:
        path = params.seed_orientations or params.seed_orientations_all
    if path:
        return read_seed_file(_resolve(params, path),
                              params.nr_orientations
                              if path == params.seed_orientations else None)
    log.info("no SeedOrientationsAll/SeedOrientations: using a 1.5 deg fundamental-zone grid")
    return fundamental_zone_grid(space_group, 1.5)


def _resolve(params: NFParameters, path: str) -> str:
    if os.path.isabs(path) or os.path.exists(path):
        return path
    for d in (params.output_directory, params.data_directory):
        if d and os.path.exists(os.path.join(d, path)):
            return os.path.join(d, path)
    raise ValueError(f"seeds: file {path!r} not found (also looked in OutputDirectory and "
                     f"DataDirectory)")


# ---- pipeline file -------------------------------------------------------------------------

def completed_stages(path: str | os.PathLike) -> list[str]:
    """Names of the finished stages recorded in a pipeline file, in order."""
    import h5py

    with h5py.File(path, "r") as f:
        grp = f.get("pipeline_state/completed_stages")
        if grp is None:
            return []
        return [grp[str(i)][()].decode() if isinstance(grp[str(i)][()], bytes)
                else str(grp[str(i)][()]) for i in range(len(grp))]


def _new_pipeline_file(path: Path, param_text: str, options: str) -> None:
    import h5py

    from xreduce.io.writers import atomic_output

    from .. import __version__ as version

    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["NX_class"] = "NXroot"
            f.attrs["default"] = "entry"
            prov = f.create_group("provenance")
            prov.attrs["NX_class"] = "NXcollection"
            prov["parameters"] = param_text
            prov["fit_options"] = options
            prov["program"] = "xreduce-nf"
            prov["xreduce_version"] = str(version)
            prov["numpy_version"] = np.__version__
            f.create_group("pipeline_state/completed_stages")
            f.create_group("stages")
            entry = f.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"


def _commit_stage(path: Path, name: str, data: dict, attrs: dict, final_map=None) -> None:
    """Copy the pipeline file, add the stage and its completion, rename over the old one."""
    import h5py

    from xreduce.io.writers import atomic_output

    with atomic_output(path) as tmp:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+") as f:
            if name in f["stages"]:
                del f["stages"][name]
            g = f["stages"].create_group(name)
            g.attrs["NX_class"] = "NXcollection"
            for k, v in data.items():
                g.create_dataset(k, data=v)
            for k, v in attrs.items():
                g.attrs[k] = v
            for k, units in (("x_um", "um"), ("y_um", "um"), ("euler_rad", "rad")):
                if k in g:
                    g[k].attrs["units"] = units
            done = f["pipeline_state/completed_stages"]
            done[str(len(done))] = name
            if final_map is not None:
                entry = f["entry"]
                if "map" in entry:
                    del entry["map"]
                m = entry.create_group("map")
                m.attrs["NX_class"] = "NXdata"
                m.attrs["signal"] = "confidence"
                m.attrs["axes"] = ["x_um", "y_um"]
                for k in ("confidence", "x_um", "y_um", "euler_rad", "grain"):
                    m.create_dataset(k, data=final_map[k])
                m["x_um"].attrs["units"] = "um"
                m["y_um"].attrs["units"] = "um"
                m["euler_rad"].attrs["units"] = "rad"
                m.attrs["stage"] = name
                entry.attrs["default"] = "map"


def _truncate_stages(path: Path, keep: list[str]) -> None:
    import h5py

    from xreduce.io.writers import atomic_output

    with atomic_output(path) as tmp:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+") as f:
            done = f["pipeline_state/completed_stages"]
            names = [done[str(i)][()] for i in range(len(done))]
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
            for i in range(len(done)):
                del done[str(i)]
            for i, n in enumerate(keep):
                done[str(i)] = n
            for n in names:
                if n not in keep and n in f["stages"]:
                    del f["stages"][n]


def _read_stage(path: Path, name: str) -> dict:
    import h5py

    with h5py.File(path, "r") as f:
        g = f["stages"][name]
        out = {k: g[k][()] for k in g}
        out.update({f"@{k}": v for k, v in g.attrs.items()})
        return out


# ---- stages ----------------------------------------------------------------------------------

def _fit_dict(grid: Grid, res: FitResult) -> dict:
    return {"x_um": grid.x_um, "y_um": grid.y_um, "ud": grid.ud.astype(np.int8),
            "euler_rad": res.euler_rad, "confidence": res.confidence, "row": res.row,
            "n_candidates": res.n_candidates, "time_s": res.time_s}


def _grains_dict(gr: Grains) -> dict:
    return {"grain": gr.labels, "grain_orientation": gr.orientation,
            "grain_centroid_um": gr.centroid_um, "grain_n_voxels": gr.n_voxels,
            "grain_mean_confidence": gr.mean_confidence}


def run_pipeline(params: NFParameters, param_text: str = "", *, resume=None,
                 restart_from: str | None = None, skip_image_processing: bool = False,
                 progress: bool = True, num_threads: int = 0,
                 stop_after: str | None = None, restarts: int = 0,
                 neighbour_passes: int = 0, fast: bool = False,
                 executor=None) -> PipelineSummary:
    """Run (or resume) the NF reconstruction a MIDAS parameter set describes.

    Parameters
    ----------
    params : NFParameters
    param_text : str
        The parameter file's text, stored as provenance and compared on resume.
    resume : path, optional
        A pipeline file of an earlier run with the same parameters: finished stages are kept.
    restart_from : str, optional
        Redo from this stage on (the stages before it must be finished).
    skip_image_processing : bool
        Fit the existing ``SpotsInfo.bin`` (also with ``PrecomputedSpotsInfo 1``).
    stop_after : str, optional
        Stop after this stage (the rest can be resumed).
    restarts : int
        Nelder-Mead restarts (beyond MIDAS, 0 = MIDAS's refinement; see
        :func:`xreduce.nf.fit.fit_orientations`).
    neighbour_passes : int
        Passes in which each voxel tries its neighbours' fitted orientations (beyond MIDAS,
        0 = MIDAS; see :func:`xreduce.nf.fit.fit_orientations`).
    fast : bool
        Beyond MIDAS: fit with :data:`xreduce.nf.fit.FAST_PATH` (one seed per group of copies,
        smaller simplex, 2 neighbour passes unless ``neighbour_passes`` is given; doc/nf_fit.md).
    executor : None, concurrent.futures.Executor or dask.distributed.Client, optional
        Where the fits' voxel blocks run (:func:`xreduce.nf.fit.fit_orientations`).

    Returns
    -------
    PipelineSummary
    """
    for key in ("orient_tol_deg", "min_frac_accept", "space_group"):
        if getattr(params, key) is None:
            raise ValueError(f"params: {key} is needed (MIDAS key "
                             f"{ {'orient_tol_deg': 'OrientTol', 'min_frac_accept': 'MinFracAccept', 'space_group': 'SpaceGroup'}[key]!r})")
    out_dir = _output_directory(params)
    if params.grid_refactor is not None:
        start, scale, nloops = params.grid_refactor
        if not (start > 0 and scale > 0 and nloops >= 1 and float(nloops).is_integer()):
            raise ValueError(f"GridRefactor: expected start > 0, scale > 0, an integer number "
                             f"of loops >= 1, got {params.grid_refactor}")
        nloops = int(nloops)
        if nloops > 1 and params.min_confidence is None:
            raise ValueError("params: MinConfidence is needed with GridRefactor")
    else:
        start, scale, nloops = None, None, 1
    names = stage_names(nloops)
    options = f"restarts={int(restarts)}"
    fit_extra = {}
    if fast and (params.save_n_solutions or 1) != 1:
        raise ValueError(f"fast: needs SaveNSolutions 1 (its neighbour passes keep one "
                         f"solution per voxel), the parameters have {params.save_n_solutions}")
    if fast:
        fit_extra = dict(FAST_PATH)
        if int(neighbour_passes):
            fit_extra["neighbour_passes"] = int(neighbour_passes)
        neighbour_passes = fit_extra.pop("neighbour_passes")
    if int(neighbour_passes):
        options += f" neighbour_passes={int(neighbour_passes)}"
    if fast:
        options += " fast=" + ",".join(f"{k}:{v}" for k, v in fit_extra.items())
    pfile = Path(resume) if resume else out_dir / "pipeline.h5"
    if restart_from is not None and restart_from not in names:
        raise ValueError(f"restart_from: expected one of {names}, got {restart_from!r}")
    if stop_after is not None and stop_after not in names:
        raise ValueError(f"stop_after: expected one of {names}, got {stop_after!r}")
    # every check on inputs before any computing
    sg = int(params.space_group)
    full = _full_seeds(params, sg, prefer_all=start is not None)
    model = load_model(params, skip_image_processing, progress, num_threads,
                       checkpoint_dir=out_dir / IMAGES_CHECKPOINT)

    def grid_of(k):
        if start is None:
            return grid_from_parameters(params)
        return grid_from_parameters(params.replace(grid_size_um=start / scale ** k,
                                                   grid_file_name=None))

    _check_grid(grid_of(0), model, params)
    if resume:
        if not pfile.is_file():
            raise ValueError(f"resume: pipeline file {str(pfile)!r} does not exist")
        import h5py

        with h5py.File(pfile, "r") as f:
            stored = f["provenance/parameters"][()]
            stored_opts = f["provenance/fit_options"][()]
        stored = stored.decode() if isinstance(stored, bytes) else str(stored)
        stored_opts = stored_opts.decode() if isinstance(stored_opts, bytes) else str(stored_opts)
        if stored != param_text:
            raise ValueError(f"resume: {str(pfile)!r} was made with other parameters; start a "
                             f"new run or use the same parameter file")
        if stored_opts != options:
            raise ValueError(f"resume: {str(pfile)!r} was made with the fit options "
                             f"{stored_opts}, this run has {options}")
        done = completed_stages(pfile)
        if done != names[:len(done)]:
            raise ValueError(f"resume: stages {done} in {str(pfile)!r} do not match this run's "
                             f"{names}")
    elif restart_from is not None:
        if not pfile.is_file():
            raise ValueError(f"restart_from: needs the pipeline file {str(pfile)!r}")
        done = completed_stages(pfile)
    else:
        _new_pipeline_file(pfile, param_text, options)
        done = []
    if restart_from is not None:
        first = names.index(restart_from)
        if len(done) < first:
            raise ValueError(f"restart_from: stage {restart_from!r} needs {names[:first]} "
                             f"finished, the file has {done}")
        done = done[:first]
        _truncate_stages(pfile, done)

    summary = PipelineSummary(str(out_dir), str(pfile), skipped_stages=list(done))
    opts = dict(min_frac_accept=params.min_frac_accept, orient_tol_deg=params.orient_tol_deg,
                save_n_solutions=params.save_n_solutions or 1,
                min_miso_n_saves_deg=extra_value(params, "MinMisoNSaves", float, 1.0),
                space_group=sg, restarts=restarts, neighbour_passes=neighbour_passes,
                progress=progress, **fit_extra,
                num_threads=num_threads, executor=executor)
    min_conf = params.min_confidence if params.min_confidence is not None else 0.0
    max_angle = params.max_angle_deg or 1.0

    def cluster(grid, euler, conf):
        return cluster_grains(euler, conf, grid.x_um, grid.y_um, grid.edge_um, sg,
                              min_confidence=min_conf, max_angle_deg=max_angle,
                              num_threads=num_threads)

    def final_map(grid, d):
        return {"x_um": grid.x_um, "y_um": grid.y_um, "confidence": d["confidence"],
                "euler_rad": d["euler_rad"], "grain": d["grain"]}

    for name in names:
        if name in done:
            continue
        t0 = time.perf_counter()
        log.info("stage %s: start", name)
        k = int(name.split("_")[1])
        grid = grid_of(k)
        if name == "loop_0_initial":
            res = fit_orientations(model, grid, full, progress_desc=name, **opts)
            gr = cluster(grid, res.euler_rad, res.confidence)
            data = {**_fit_dict(grid, res), **_grains_dict(gr)}
            _commit_stage(pfile, name, data, {"edge_um": grid.edge_um},
                          final_map(grid, data))
        elif name.endswith("_seeded"):
            prev = _read_stage(pfile, names[names.index(name) - 1])
            seeds = prev["grain_orientation"]
            if len(seeds) == 0:
                raise ValueError(f"stage {name}: the previous loop found no grain to seed it "
                                 f"(MinConfidence {min_conf})")
            res = fit_orientations(model, grid, seeds, progress_desc=name, **opts)
            _commit_stage(pfile, name, _fit_dict(grid, res), {"edge_um": grid.edge_um})
        elif name.endswith("_unseeded"):
            seeded = _read_stage(pfile, f"loop_{k}_seeded")
            redo = np.nonzero(seeded["confidence"] < min_conf)[0]
            res = fit_orientations(model, grid.select(redo), full, progress_desc=name, **opts)
            data = _fit_dict(grid.select(redo), res)
            data["voxel"] = redo
            _commit_stage(pfile, name, data, {"edge_um": grid.edge_um})
        else:  # merge
            seeded = _read_stage(pfile, f"loop_{k}_seeded")
            unseeded = _read_stage(pfile, f"loop_{k}_unseeded")
            merged = {key: np.array(seeded[key]) for key in
                      ("euler_rad", "confidence", "row", "n_candidates", "time_s")}
            v = unseeded["voxel"]
            better = unseeded["confidence"] > merged["confidence"][v]
            for key in merged:
                merged[key][v[better]] = unseeded[key][better]
            gr = cluster(grid, merged["euler_rad"], merged["confidence"])
            data = {"x_um": grid.x_um, "y_um": grid.y_um, "ud": grid.ud.astype(np.int8),
                    **merged, **_grains_dict(gr), "from_unseeded": v[better]}
            _commit_stage(pfile, name, data, {"edge_um": grid.edge_um},
                          final_map(grid, data))
        summary.stage_seconds[name] = time.perf_counter() - t0
        log.info("stage %s: done in %.1f s", name, summary.stage_seconds[name])
        if stop_after == name:
            break
    last_done = completed_stages(pfile)
    if last_done == names:
        _write_outputs(params, out_dir, pfile, names[-1], summary, options)
        shutil.rmtree(out_dir / IMAGES_CHECKPOINT, ignore_errors=True)
    return summary


def _write_outputs(params: NFParameters, out_dir: Path, pfile: Path, last: str,
                   summary: PipelineSummary, options: str) -> None:
    """The final map: MIDAS's text mic (voxels with confidence > 0), its MicFileBinary (every
    voxel, all-zero rows where no orientation was found, as MIDAS), Grains.csv, and the NeXus
    map ``<mic>.h5`` (every voxel, Euler angles 0 where none was found) with its picture
    ``<mic>.png`` (IPF colours and confidence)."""
    from .maps import plot_map, write_map_hdf5
    from .mic import write_mic, write_mic_binary

    d = _read_stage(pfile, last)
    edge = float(d["@edge_um"])
    fitted = d["confidence"] > 0
    summary.n_voxels = int(len(fitted))
    summary.n_fitted = int(fitted.sum())
    summary.mean_confidence = float(d["confidence"][fitted].mean()) if fitted.any() else 0.0
    summary.n_grains = int(len(d["grain_n_voxels"]))
    columns = {"x_um": d["x_um"], "y_um": d["y_um"], "edge_um": edge, "ud": d["ud"],
               "euler_rad": np.nan_to_num(d["euler_rad"]), "confidence": d["confidence"],
               "row": np.where(fitted, d["row"], 0),   # -1 (no seed passed) is no mic row
               "orientation_id": d["n_candidates"], "time": d["time_s"]}
    mic_name = params.mic_file_text or "microstructure.mic"
    write_mic(out_dir / mic_name, **{k: v[fitted] if np.ndim(v) else v
                                     for k, v in columns.items()})
    if params.mic_file_binary:
        binary = {k: np.where(fitted.reshape((-1,) + (1,) * (np.ndim(v) - 1)), v, 0)
                  for k, v in columns.items() if np.ndim(v)}
        write_mic_binary(out_dir / params.mic_file_binary, edge_um=np.where(fitted, edge, 0.0),
                         **binary)
    provenance = {"command": "xreduce-nf", "stage": last, "pipeline_file": str(pfile),
                  "fit_options": options}
    write_map_hdf5(out_dir / f"{mic_name}.h5", **columns, params=params,
                   space_group=params.space_group, lattice_parameter=params.lattice_parameter,
                   provenance=provenance)
    plot_map(out_dir / f"{mic_name}.png", d["x_um"], d["y_um"], edge, d["ud"],
             columns["euler_rad"], d["confidence"], params.space_group,
             params.lattice_parameter, min_confidence=params.min_confidence or 0.0,
             title=f"NF map {mic_name} ({summary.n_fitted} of {summary.n_voxels} voxels fitted)")
    grains = Grains(d["grain"], d["grain_orientation"], d["grain_centroid_um"],
                    d["grain_n_voxels"],
                    d["grain_n_voxels"] * np.sqrt(3.0) / 4.0 * edge ** 2,
                    d["grain_mean_confidence"])
    write_grains_csv(out_dir / "Grains.csv", grains)
