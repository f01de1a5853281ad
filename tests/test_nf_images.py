"""NF image processing: raw TIFF series / HDF5 stacks -> lit-pixel stack (SpotsInfo.bin)."""
import io

import numpy as np
import pytest

from reference import nf_process_images_reference
from xreduce.nf import images
from xreduce.nf.grid import hexagonal_grid
from xreduce.nf.microstructure import voronoi_microstructure
from xreduce.nf.params import GEOMETRY_KEYS, read_parameters
from xreduce.nf.reflections import reflections_from_parameters
from xreduce.nf.simulate import (
    simulate_binary_images, simulate_frames, unpack_image, write_frames_hdf5, write_frames_tiff,
    write_raw_frames,
)
from xreduce.nf.spots import NFGeometry
from xreduce.nf.spotsinfo import unpack_lit

NY, NZ = 96, 80  # detector columns (Y) and rows (Z): not square, to catch transposes


def _params(folder, n_frames=24, extra=""):
    text = f"""nDistances 2
Lsd 1000
Lsd 1300
BC 48 10
BC 48.5 11
px 1.48
NrPixelsY {NY}
NrPixelsZ {NZ}
Wavelength 0.172979
SpaceGroup 225
LatticeParameter 4.08 4.08 4.08 90 90 90
MaxRingRad 130
OmegaStart -180
OmegaStep {360 / n_frames}
OmegaRange -180 180
BoxSize -2000 2000 -2000 2000
StartNr 0
EndNr {n_frames - 1}
NrFilesPerDistance {n_frames}
RawStartNr 3
DataDirectory {folder}
OrigFileName raw
extOrig tif
{extra}
"""
    return read_parameters(io.StringIO(text), required=GEOMETRY_KEYS)


def _frames(p, **kw):
    geo = NFGeometry.from_parameters(p)
    refl = reflections_from_parameters(p)
    micro = voronoi_microstructure(hexagonal_grid(12.0, 4.0), 3, seed=5)
    return micro, refl, geo, list(simulate_frames(micro, refl, geo, **kw))


def _reference_words(frames_list, p, settings):
    from xreduce.nf.spotsinfo import pack_lit

    nd, nf, ny, nz = images.stack_shape(p)
    lit = np.zeros((nd, nf, ny, nz), bool)
    for d in range(nd):
        stack = np.stack([img for dd, f, img in frames_list if dd == d])
        lit[d] = nf_process_images_reference(
            stack, settings.blanket_subtraction, settings.med_filt_radius,
            settings.do_log_filter, settings.log_mask_radius, settings.gauss_filt_radius)
    return pack_lit(lit)


@pytest.mark.parametrize("n_frames, radius, do_log", [(24, 1, False), (23, 2, False),
                                                      (24, 1, True)])
def test_noisy_tiff_series_equals_reference(tmp_path, n_frames, radius, do_log):
    """Poisson-noisy frames in MIDAS's raw orientation and file names -> the lit stack equals
    the plain NumPy reference bit for bit (several row bands, even and odd frame counts)."""
    p = _params(tmp_path, n_frames, f"BlanketSubtraction 20\nMedFiltRadius {radius}\n"
                                    f"DoLoGFilter {int(do_log)}\nLoGMaskRadius 4\n"
                                    f"GaussFiltRadius 1.2")
    micro, refl, geo, frames = _frames(p, seed=2, background=50.0, spot_counts=400.0)
    files = write_frames_tiff(tmp_path, "raw", iter(frames), n_frames, raw_start_nr=3)
    assert files[0].name == "raw_000003.tif"
    assert files[-1].name == f"raw_{2 * n_frames + 2:06d}.tif"
    settings = images.ImageProcessing.from_parameters(p)
    # 7 rows of all frames per band: several bands, the last one partial
    words = images.process_images(p, progress=False, num_threads=2,
                                  memory_bytes=7 * n_frames * NY * 2)
    want = _reference_words(frames, p, settings)
    assert words.dtype == np.dtype("<u4") and words.shape == want.shape
    np.testing.assert_array_equal(words, want)
    # and the processing finds the spots: most true footprint pixels lit, few lit pixels far
    # (> 2 px) from any (the Gaussian spot profile lights a halo next to them)
    from scipy.ndimage import binary_dilation

    lit = unpack_lit(words, images.stack_shape(p))
    truth = unpack_lit(simulate_binary_images(micro, refl, geo, n_frames=n_frames),
                       images.stack_shape(p))
    near = binary_dilation(truth, np.ones((1, 1, 5, 5), bool))
    assert truth.sum() > 300
    # the LoG mask keeps the closed spot outlines only: small spots lose a few pixels
    assert (lit & truth).sum() >= (0.75 if do_log else 0.85) * truth.sum()
    assert (lit & ~near).sum() <= 0.25 * lit.sum()


def test_noiseless_frames_give_the_simulated_binary_images(tmp_path):
    """Without noise or blur, processing the simulated raw frames gives back exactly the
    simulated binary images: file names, raw orientation and bit layout all agree."""
    p = _params(tmp_path, 24, "MedFiltRadius 0\nDoLoGFilter 0")
    micro, refl, geo, frames = _frames(p, poisson=False, spot_sigma_px=0.0, background=100.0)
    files = write_raw_frames(p, iter(frames))  # where the parameter file says
    assert files[0] == tmp_path / "raw_000003.tif" and files[-1] == tmp_path / "raw_000050.tif"
    words = images.process_images(p, progress=False)
    want = simulate_binary_images(micro, refl, geo, n_frames=24)
    assert np.count_nonzero(unpack_lit(want, images.stack_shape(p))) > 50
    np.testing.assert_array_equal(words, want)
    one = unpack_image(words, images.stack_shape(p), 1, 5)
    assert one.shape == (NY, NZ)


def test_hdf5_stacks_equal_tiff_series(tmp_path):
    p = _params(tmp_path, 20, "DoLoGFilter 0\nBlanketSubtraction 2")
    micro, refl, geo, frames = _frames(p, seed=4)
    write_frames_tiff(tmp_path, "raw", iter(frames), 20, raw_start_nr=3)
    h5 = write_frames_hdf5(tmp_path / "raw.h5", iter(frames), geo, n_frames=20)
    from_tiff = images.process_images(p, progress=False)
    q = p.replace(raw_data_urls=(f"{h5}::/entry/distance_0/data",
                                 f"{h5}::/entry/distance_1/data[0:20]"))
    np.testing.assert_array_equal(images.process_images(q, progress=True, memory_bytes=7 * 20 * NY * 2), from_tiff)
    images.write(tmp_path / "SpotsInfo.bin", from_tiff)
    np.testing.assert_array_equal(images.read(tmp_path / "SpotsInfo.bin", p), from_tiff)
    with pytest.raises(ValueError, match="SpotsInfo.bin has .* bytes"):
        images.read(tmp_path / "SpotsInfo.bin", p.replace(nr_pixels_y=NY + 1))
    with pytest.raises(ValueError, match="holds 20 frames but the parameters give 21"):
        images.process_images(q.replace(nr_files_per_distance=21, end_nr=20), progress=False)
    (tmp_path / "fake.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match="fake.h5' is not a readable HDF5 file"):
        images.process_images(q.replace(raw_data_urls=(f"{tmp_path}/fake.h5::/d",) * 2),
                              progress=False)
    with pytest.raises(ValueError, match="no dataset"):
        images.process_images(q.replace(raw_data_urls=(f"{h5}::/nope", f"{h5}::/nope")),
                              progress=False)


def test_bad_raw_frames_fail_before_processing(tmp_path):
    p = _params(tmp_path, 12, "DoLoGFilter 0")
    micro, refl, geo, frames = _frames(p, seed=1)
    files = write_frames_tiff(tmp_path, "raw", iter(frames), 12, raw_start_nr=3)
    files[14].unlink()
    with pytest.raises(ValueError, match=r"1 of the 12 files of distance 1 are missing, first "
                                         r".*raw_000017.tif"):
        images.process_images(p, progress=False)
    files[14].write_bytes(b"")
    with pytest.raises(ValueError, match="raw_000017.tif' is empty"):
        images.process_images(p, progress=False)
    with pytest.raises(ValueError, match="NrFilesPerDistance is 12 but EndNr - StartNr"):
        images.process_images(p.replace(end_nr=12), progress=False)
    with pytest.raises(ValueError, match=r"is \(80, 96\) \(rows, columns\) but NrPixelsZ"):
        images.process_images(p.replace(nr_pixels_z=NY, nr_pixels_y=NZ), progress=False)
    with pytest.raises(ValueError, match="WFImages is 2"):
        images.process_images(p.replace(wf_images=2), progress=False)
    with pytest.raises(ValueError, match="OrigFileName"):
        images.process_images(p.replace(orig_file_name=None), progress=False)
    with pytest.raises(ValueError, match="med_filt_radius"):
        images.ImageProcessing(med_filt_radius=3)


def test_defaults_are_midas_c_program_defaults():
    p = read_parameters(io.StringIO("nDistances 1\nLsd 1\nBC 1 1\n"), required=())
    s = images.ImageProcessing.from_parameters(p)
    assert (s.blanket_subtraction, s.med_filt_radius, s.do_log_filter, s.log_mask_radius,
            s.gauss_filt_radius) == (0.0, 1, True, 4, 1.0)


def test_log_mask_follows_midas_kernel_and_fills_spots():
    k = images.log_kernel(4, 1.0)
    # trunc(79720 * -1/pi * (1 - r^2/2) * exp(-r^2/2)) at r^2 = 0, 1, 2, 4
    assert (k[4, 4], k[4, 5], k[5, 5], k[4, 6]) == (-25375, -7695, 0, 3434)
    assert k.shape == (9, 9) and (k == k.T).all()
    img = np.zeros((40, 40), np.uint16)
    img[10:17, 20:27] = 100  # a bright square spot: its outline is an edge, filled inside
    img[38, 2] = 100  # a spot too near the border for the kernel: not lit
    s = images.ImageProcessing(med_filt_radius=0, do_log_filter=True)
    lit = images.binarize_frame(img, np.zeros_like(img), s, 1)
    want = np.zeros_like(lit)
    want[10:17, 20:27] = True
    np.testing.assert_array_equal(lit, want)


def test_tiff_row_bands_memory_mapped_or_read_whole(tmp_path):
    """Uncompressed TIFFs are read band by band through a memory map, compressed ones whole
    and cut: both give the same rows."""
    import tifffile

    frame = np.arange(80 * 96, dtype=np.uint16).reshape(80, 96)
    tifffile.imwrite(tmp_path / "plain.tif", frame)
    tifffile.imwrite(tmp_path / "packed.tif", frame, compression="zlib")
    series = images._TiffSeries([str(tmp_path / "plain.tif"), str(tmp_path / "packed.tif")])
    for j in range(2):
        np.testing.assert_array_equal(series.rows(j, 7, 19), frame[7:19])
        np.testing.assert_array_equal(series.frame(j), frame)
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError, match="broken.tif: cannot read this image"):
        images._TiffSeries([str(tmp_path / "broken.tif")]).rows(0, 0, 3)


def test_interrupted_processing_resumes_from_checkpoints(tmp_path, monkeypatch):
    """Stopped in the middle of distance 1, a run started again with the same checkpoint
    folder redoes only the unfinished piece and gives the uninterrupted result."""
    p = _params(tmp_path, 24, "DoLoGFilter 0\nBlanketSubtraction 20")
    micro, refl, geo, frames = _frames(p, seed=3, background=50.0, spot_counts=400.0)
    write_raw_frames(p, iter(frames))
    want = images.process_images(p, progress=False)
    calls = []
    real = images.binarize_frame

    def failing(frame, background, settings, num_threads=0):
        calls.append(1)
        if len(calls) == 24 + 13:  # the 13th frame (12) of distance 1
            raise KeyboardInterrupt
        return real(frame, background, settings, num_threads)

    monkeypatch.setattr(images, "binarize_frame", failing)
    ckpt = tmp_path / "images.partial"
    with pytest.raises(KeyboardInterrupt):
        images.process_images(p, progress=False, num_threads=1, checkpoint_dir=ckpt,
                              checkpoint_frames=8)
    names = sorted(f.name for f in ckpt.iterdir())
    assert names == ["background_0.npy", "background_1.npy", "lit_0_000000.npy",
                     "lit_0_000008.npy", "lit_0_000016.npy", "lit_1_000000.npy",
                     "state.json"]
    calls.clear()
    got = images.process_images(p, progress=False, num_threads=1, checkpoint_dir=ckpt,
                                checkpoint_frames=8)
    assert len(calls) == 16  # frames 8..23 of distance 1 only
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="holds the work of another image processing"):
        images.process_images(p.replace(blanket_subtraction=5.0), progress=False,
                              checkpoint_dir=ckpt)
