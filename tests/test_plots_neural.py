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
