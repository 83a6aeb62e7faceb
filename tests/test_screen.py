"""The monitor warp and visible mask against the AllenSDK's own templates; the natural-movie template and its cache."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from vbo import screen

TRUTH = "truth/behavior_ophys_experiment_1091765022"


@pytest.fixture(scope="module")
def sdk_templates(load_truth, shared_data):
    """The SDK's stimulus templates of the shared experiment: (unwarped, warped) stacks, 8 × 1200 × 1920."""
    templates = load_truth(str(shared_data / "sdk-files" / TRUTH))["stimulus_templates"]
    return np.stack(templates["unwarped"].to_list()), np.stack(templates["warped"].to_list())


@pytest.fixture
def movie():
    return np.random.default_rng(3).integers(0, 256, size=(5, 12, 24)).astype(np.uint8)


def test_visible_mask_is_where_the_sdk_templates_are_not_nan(sdk_templates):
    unwarped, _ = sdk_templates
    mask = screen.visible_mask()
    assert mask.shape == screen.SCREEN_SHAPE and mask.dtype == bool and not mask.flags.writeable
    for image in unwarped:
        np.testing.assert_array_equal(mask, ~np.isnan(image))
    assert 0.35 < mask.mean() < 0.45  # about 40 % of the screen is seen


def test_warp_reproduces_the_sdk_warped_templates(sdk_templates):
    """Where the SDK's source pixels are known (not NaN in its unwarped image), the warp is byte-identical."""
    unwarped, warped = sdk_templates
    invisible = np.isnan(unwarped[0])
    # each warped pixel's distance (px) from any unknown source pixel: the spline prefilter reaches ~10 px
    distance = ndimage.distance_transform_edt(~invisible)
    reach = ndimage.map_coordinates(distance, screen.warp_coordinates(), order=0).reshape(screen.SCREEN_SHAPE)
    known = reach > 12
    assert known.mean() > 0.85
    ours = screen.warp(np.where(invisible, screen.GRAY, unwarped).astype(np.uint8), n_workers=2)
    assert ours.dtype == np.uint8 and ours.shape == warped.shape
    np.testing.assert_array_equal(ours[:, known], warped[:, known])
    # and near the unknown pixels the difference is the unknown content, not the geometry
    assert (ours != warped).mean() < 0.01


def test_warp_geometry():
    coordinates = screen.warp_coordinates()
    rows, columns = screen.SCREEN_SHAPE
    assert coordinates.shape == (2, rows * columns) and not coordinates.flags.writeable
    grid = coordinates.reshape(2, rows, columns)
    # the centre stays put, the warp pulls every screen pixel toward it and keeps left/right, up/down
    np.testing.assert_allclose(grid[:, rows // 2, columns // 2], [rows / 2, columns / 2], atol=1e-3)
    assert 100 < grid[0].min() < grid[0].max() < rows - 100
    assert 300 < grid[1].min() < grid[1].max() < columns - 300
    assert np.all(np.diff(grid[1, rows // 2]) > 0) and np.all(np.diff(grid[0, :, columns // 2]) > 0)
    height, width = screen.panel_size_cm()
    assert np.hypot(height, width) == pytest.approx(screen.PANEL_DIAGONAL_CM)
    assert width / height == pytest.approx(columns / rows)


def test_movie_frames_are_resized_and_centred_on_gray(movie):
    placed = screen.movie_frames_to_screen(movie)
    assert placed.shape == (len(movie), *screen.SCREEN_SHAPE) and placed.dtype == np.uint8
    assert (placed[:, :60] == screen.GRAY).all() and (placed[:, 1140:] == screen.GRAY).all()
    expected = np.asarray(Image.fromarray(movie[2]).resize((1920, 1080), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(placed[2, 60:1140], expected)
    np.testing.assert_array_equal(screen.movie_frames_to_screen(movie[2]), placed[2])
    with pytest.raises(TypeError, match="uint8"):
        screen.movie_frames_to_screen(movie.astype(float))


def test_warp_threads_serial_and_single_image_agree(movie):
    placed = screen.movie_frames_to_screen(movie[:3])
    serial = screen.warp(placed, n_workers=1)
    np.testing.assert_array_equal(screen.warp(placed, n_workers=3), serial)
    np.testing.assert_array_equal(screen.warp(placed[1]), serial[1])
    reference = ndimage.map_coordinates(placed[1], screen.warp_coordinates()).reshape(screen.SCREEN_SHAPE)
    np.testing.assert_array_equal(serial[1], reference)
    floats = screen.warp(placed[:1].astype(np.float64), n_workers=1)
    assert floats.dtype == np.float64 and np.abs(floats - serial[:1]).max() <= 0.5 + 1e-9
    with pytest.raises(ValueError, match="at least 4 px"):
        screen.warp(np.zeros((2, 2), dtype=np.uint8))


def test_coarser_screens_model_the_same_panel():
    """A 300 x 480 screen (the simulator's small templates) warps and masks like the real one, scaled."""
    small = screen.visible_mask((300, 480))
    full = screen.visible_mask()
    assert small.shape == (300, 480) and abs(small.mean() - full.mean()) < 0.02
    np.testing.assert_allclose(screen.warp_coordinates((300, 480)).reshape(2, 300, 480)[:, ::75, ::120] * 4,
                               screen.warp_coordinates().reshape(2, 1200, 1920)[:, ::300, ::480], atol=6.0)
    image = np.full((300, 480), 127, dtype=np.uint8)
    assert (screen.warp(image) == 127).all()  # a uniform screen stays uniform


def test_unwarped_is_nan_where_invisible(movie):
    placed = screen.movie_frames_to_screen(movie[:2])
    flat = screen.unwarped(placed)
    assert flat.dtype == np.float64
    np.testing.assert_array_equal(np.isnan(flat[0]), ~screen.visible_mask())
    np.testing.assert_array_equal(flat[1][screen.visible_mask()], placed[1][screen.visible_mask()])


def test_movie_template_values_and_index(movie):
    template = screen.movie_template(movie, n_workers=2)
    assert template.index.name == "movie_frame_index" and template.index.dtype == np.int64
    assert list(template.index) == list(range(len(movie))) and list(template.columns) == ["unwarped", "warped"]
    assert template.name == "natural_movie_one"
    placed = screen.movie_frames_to_screen(movie[4])
    np.testing.assert_array_equal(template.loc[4, "warped"], screen.warp(placed))
    np.testing.assert_array_equal(template.loc[4, "unwarped"], screen.unwarped(placed))
    part = screen.movie_template(movie, frames=[4, 1])
    assert list(part.index) == [4, 1]
    np.testing.assert_array_equal(part.loc[4, "warped"], template.loc[4, "warped"])
    assert list(screen.movie_template(movie, frames=slice(1, None, 2)).index) == [1, 3]
    assert list(screen.movie_template(movie, frames=np.int64(3)).index) == [3]
    with pytest.raises(IndexError, match="movie frame 5 does not exist.*0..4"):
        screen.movie_template(movie, frames=[0, 5])
    with pytest.raises(TypeError, match="frames"):
        screen.movie_template(movie, frames=[0.5])
    with pytest.raises(ValueError, match="uint8 frames"):
        screen.movie_template(movie[0])


def test_movie_template_cache_is_written_once_and_mapped(movie, tmp_path, monkeypatch):
    monkeypatch.setattr(screen, "FRAMES_PER_CHUNK", 2)  # several chunks with few frames
    cache_file = tmp_path / "Movie_TOE1.warped.npy"
    subset = screen.movie_template(movie, frames=[0], cache_file=cache_file)
    assert list(tmp_path.glob("*.npy")) == []  # a subset never writes a partial cache
    full = screen.movie_template(movie, cache_file=cache_file)
    written = list(tmp_path.glob("Movie_TOE1.warped.*.npy"))
    assert len(written) == 1 and not list(tmp_path.glob("*.tmp"))
    stack = np.load(written[0])
    assert stack.shape == (len(movie), *screen.SCREEN_SHAPE)
    np.testing.assert_array_equal(subset.loc[0, "warped"], full.loc[0, "warped"])

    def no_warping(*args, **kwargs):
        raise AssertionError("the cached warp was computed again")

    monkeypatch.setattr(screen, "warp", no_warping)
    again = screen.movie_template(movie, frames=[3, 4], cache_file=cache_file)
    assert isinstance(again.loc[3, "warped"], np.memmap)  # a view of the file, not a copy in memory
    np.testing.assert_array_equal(again.loc[3, "warped"], stack[3])
    again.loc[3, "warped"][0, 0] = 1  # cells are private copies-on-write: the cache is untouched
    np.testing.assert_array_equal(np.load(written[0])[3], stack[3])


def test_movie_template_cache_survives_faults(movie, tmp_path, monkeypatch):
    monkeypatch.setattr(screen, "FRAMES_PER_CHUNK", 2)
    cache_file = tmp_path / "Movie_TOE1.warped.npy"
    real_warp = screen.warp
    calls = []

    def failing_warp(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk vanished")
        return real_warp(*args, **kwargs)

    monkeypatch.setattr(screen, "warp", failing_warp)
    with pytest.raises(OSError, match="disk vanished"):
        screen.movie_template(movie, cache_file=cache_file)
    assert not list(tmp_path.glob("*.npy")) and not list(tmp_path.glob("*.tmp"))  # nothing half-written
    monkeypatch.setattr(screen, "warp", real_warp)
    expected = np.array(screen.movie_template(movie, cache_file=cache_file).loc[2, "warped"])
    written = next(tmp_path.glob("Movie_TOE1.warped.*.npy"))
    written.write_bytes(written.read_bytes()[:1000])  # truncated behind our back
    rebuilt = screen.movie_template(movie, cache_file=cache_file)
    np.testing.assert_array_equal(rebuilt.loc[2, "warped"], expected)
    assert np.load(written).shape == (len(movie), *screen.SCREEN_SHAPE)
    other = movie[::-1].copy()  # a different movie gets its own file; the stale one goes
    screen.movie_template(other, cache_file=cache_file)
    remaining = list(tmp_path.glob("Movie_TOE1.warped.*.npy"))
    assert len(remaining) == 1 and remaining[0] != written


def test_movie_template_refuses_what_cannot_fit_in_memory(monkeypatch):
    import os

    huge = np.zeros((2000, 2, 2), dtype=np.uint8)  # 2000 frames need ~39 GiB at screen size
    page = os.sysconf("SC_PAGE_SIZE")
    monkeypatch.setattr(os, "sysconf", lambda name: page if name == "SC_PAGE_SIZE" else 2**30 // page)  # report 1 GiB
    with pytest.raises(MemoryError, match=r"2000 movie frames .* need .* GiB .*frames="):
        screen.movie_template(huge)
    assert len(screen.movie_template(huge, frames=[0, 1])) == 2  # a part fits
