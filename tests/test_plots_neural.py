"""Neural figures: each returns a Figure and renders to PNG (shared SDK experiment and the tiny release)."""

from __future__ import annotations

import io
import warnings

import pytest

from vbo import plots
from vbo import responses as R


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=50)
    plt.close(fig)
    data = buffer.getvalue()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    return data


@pytest.fixture(scope="module")
def experiment(experiment_nwb):
    from vbo import BehaviorOphysExperiment

    with BehaviorOphysExperiment.from_nwb_path(experiment_nwb) as e:
        yield e


def test_roi_projection(experiment):
    fig = plots.roi_projection(experiment)
    ax = fig.axes[0]
    assert ax.images and len(ax.collections) >= 1
    _png(fig)
    _png(plots.roi_projection(experiment, projection="average"))


def test_dff_heatmap(experiment):
    fig = plots.dff_heatmap(experiment, max_columns=500)
    mesh = fig.axes[0].collections[0]
    assert mesh.get_cmap().name == "magma"
    assert fig.axes[1].get_ylabel() == "dF/F"
    _png(fig)


def test_cell_trace(experiment):
    fig = plots.cell_trace(experiment, 5, t_range=(400, 460))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "time (seconds)" and ax.get_ylabel() == "trace magnitude"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["dff", "events"]
    _png(fig)
    with pytest.raises(KeyError):
        plots.cell_trace(experiment, 123456789)


def test_behavior_neural_window(experiment):
    fig = plots.behavior_neural_window(experiment, 330, 360, cell=3)
    top, bottom = fig.axes
    assert bottom.get_xlabel() == "time in session (s)"
    assert len(top.patches) > 10  # stimulus spans
    _png(fig)


def test_change_responses_by_trial_type(experiment):
    result = R.trial_type_responses(experiment, window=(-1, 2), p_value=False)
    fig = plots.change_responses_by_trial_type(result)
    labels = [t.get_text().split(" ")[0] for t in fig.axes[0].get_legend().get_texts()]
    assert set(labels) == set(result.events["trial_type"])
    _png(fig)
    _png(plots.change_responses_by_trial_type(experiment))


def test_image_response_heatmap(experiment):
    result = R.stimulus_responses(experiment, "images", window=(-0.5, 0.75), p_value=False)
    fig = plots.image_response_heatmap(result)
    assert fig.axes[0].get_ylabel() == "image name"
    assert fig.axes[0].images[0].get_array().shape == (8, len(experiment.dff_traces))
    _png(fig)


def test_responses_by_cell_type_on_the_tiny_release(tiny_release):
    from vbo.cache.project import VisualBehaviorOphysProjectCache

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache = VisualBehaviorOphysProjectCache.from_local_cache(tiny_release.root, use_static_cache=True)
        table = cache.get_ophys_experiment_table()
        ids = table[~table["passive"]].groupby("cre_line").head(2).index

        def experiments():
            for experiment_id in ids:
                with cache.get_behavior_ophys_experiment(int(experiment_id)) as e:
                    yield e

        fig = plots.responses_by_cell_type(experiments())
        titles = [ax.get_title() for ax in fig.axes]
        assert titles == ["changes", "omissions"]
        labels = {t.get_text().split(" ")[0] for t in fig.axes[0].get_legend().get_texts()}
        assert labels == {"Slc17a7", "Sst", "Vip"}
        _png(fig)
        with cache.get_behavior_ophys_experiment(int(ids[0])) as e:
            _png(plots.roi_projection(e))
            _png(plots.dff_heatmap(e))
            _png(plots.behavior_neural_window(e))


def test_container_projections_and_plane_traces(tiny_cache):
    table = tiny_cache.get_ophys_experiment_table()
    container = table["ophys_container_id"].value_counts().index[0]
    members = table[table["ophys_container_id"] == container]
    fig = plots.container_projections(tiny_cache, str(container))  # ids as str work
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == len(members)
    order = members.sort_values("date_of_acquisition").index
    assert [ax.get_title().split("\n")[0] for ax in images] == [str(i) for i in order]
    _png(fig)
    with pytest.raises(ValueError, match="no experiments in container 1"):
        plots.container_projections(tiny_cache, 1)
    active = members[~members["passive"].astype(bool)].sort_values("date_of_acquisition").index
    assert 0 < len(active) < len(members), "the container has passive sessions"
    fig = plots.container_projections(tiny_cache, container, passive=False)
    assert [ax.get_title().split("\n")[0] for ax in fig.axes if ax.images] == [str(i) for i in active]
    assert "active sessions" in fig._suptitle.get_text()
    _png(fig)

    planes = table.groupby("ophys_session_id").size()
    session = planes.idxmax()  # the session with the most planes
    rows = table[table["ophys_session_id"] == session]
    fig = plots.plane_population_traces(tiny_cache, session, t_range=(0.0, 60.0))
    ax = fig.axes[0]
    labels = sorted(t.get_text() for t in ax.get_legend().get_texts())
    assert labels == sorted(f"{r.targeted_structure}_{r.imaging_depth}" for r in rows.itertuples())
    assert ax.get_xlabel() == "time (seconds)" and ax.get_ylabel() == "dF/F" and ax.get_xlim() == (0.0, 60.0)
    assert ax.get_title() == f"{rows['cre_line'].iloc[0]}, ophys session {session}"
    with tiny_cache.get_behavior_ophys_experiment(int(rows.sort_values(["targeted_structure",
                                                                         "imaging_depth"]).index[0])) as e:
        expected = R.population_trace(e)
    first = ax.lines[0]
    shown = expected[(expected["timestamps"] >= 0) & (expected["timestamps"] <= 60)]
    assert list(first.get_xdata()) == list(shown["timestamps"])
    _png(fig)


def test_stimulus_template(experiment):
    import numpy as np

    from vbo import screen

    templates = experiment.stimulus_templates
    name = templates.index[2]
    fig = plots.stimulus_template(templates, name)
    assert [ax.get_title() for ax in fig.axes] == [f"{name} (unwarped)", f"{name} (warped)"]
    shown = fig.axes[1].images[0].get_array()
    np.testing.assert_array_equal(np.asarray(shown), templates.loc[name, "warped"].astype(float))
    assert fig.axes[0].images[0].get_cmap().name == "gray"
    _png(fig)
    movie = screen.movie_template(np.full((2, 8, 16), 90, dtype=np.uint8), frames=[1])
    _png(plots.stimulus_template(movie, 1, versions=("warped",)))
    with pytest.raises(KeyError, match="'im999' is not in the templates' image_name index"):
        plots.stimulus_template(templates, "im999")
