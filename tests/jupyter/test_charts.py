"""The round dashboard's plots read like plots: a line over rounds by the metric's own name,
round tick values, a sensible range for the metric, one label per round, no ppm fields."""

from __future__ import annotations

import re

from decentralml_jupyter.jupyter import RoundDashboard, svg
from decentralml_jupyter.jupyter.widgets import plotted_metrics


def texts(chart: str, cls: str) -> list[str]:
    return re.findall(rf'<text class="{cls}"[^>]*>([^<]*)</text>', chart)


def test_nice_ticks_are_round_values_covering_the_data():
    assert svg.nice_ticks(0.0, 1.0, 5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert svg.nice_ticks(0.0, 2.37, 5) == [0.0, 1.0, 2.0, 3.0]
    assert svg.nice_ticks(0.0, 0.0611, 5) == [0.0, 0.02, 0.04, 0.06, 0.08]
    assert svg.nice_ticks(0.0, 0.0, 5) == [0.0, 0.25, 0.5, 0.75, 1.0]  # a flat zero line
    assert svg.round_ticks(3, 3) == [3]
    assert svg.round_ticks(1, 40) == [5, 10, 15, 20, 25, 30, 35, 40]
    ticks = svg.round_ticks(1, 100)
    assert len(ticks) <= 8 and len(set(ticks)) == len(ticks)


def test_a_fraction_is_drawn_from_0_to_1_and_rounds_are_labelled_once():
    chart = svg.line_chart([(1, 0.61), (2, 0.83), (3, 0.9)], "accuracy")
    assert texts(chart, "y-tick") == ["0", "0.25", "0.5", "0.75", "1"]
    assert texts(chart, "x-tick") == ["1", "2", "3"]
    assert texts(chart, "x-title") == ["round"]
    assert "<polyline" in chart and "round 3: 0.9" in chart


def test_one_round_is_a_dot_in_the_middle_with_its_value_not_an_odd_axis():
    chart = svg.line_chart([(4, 0.939)], "accuracy")
    assert texts(chart, "y-tick") == ["0", "0.25", "0.5", "0.75", "1"]  # never -0.0611..0.939
    assert texts(chart, "x-tick") == ["4"]  # one label for one round
    assert "<polyline" not in chart and chart.count("<circle") == 1
    cx = float(re.search(r'<circle cx="([\d.]+)"', chart).group(1))
    assert abs(cx - (40 + (300 - 40 - 12) / 2)) < 0.1  # the middle of the plot area
    assert ">0.939</text>" in chart


def test_a_metric_of_its_own_scale_starts_at_zero():
    chart = svg.line_chart([(1, 2.4), (2, 1.1)], "mae")
    ticks = [float(t) for t in texts(chart, "y-tick")]
    assert ticks[0] == 0 and ticks[-1] >= 2.4 and len(ticks) <= 5
    assert 'data-metric="mae"' in chart


def test_the_dashboard_plots_the_models_metric_by_name_and_no_ppm():
    rounds = [
        {"accuracy": 0.0, "loss": 0.9, "accuracy_ppm": 0, "loss_ppm": 900_000,
         "metric_ppm": 410_000, "mae": 0.41, "base_mae": 0.5, "base_metric_ppm": 500_000},
        {"accuracy": 0.0, "loss": 0.7, "accuracy_ppm": 0, "loss_ppm": 700_000,
         "metric_ppm": 350_000, "mae": 0.35},
    ]  # fmt: skip
    assert plotted_metrics(rounds) == ["mae", "loss"]
    assert plotted_metrics([{"accuracy": 0.9, "loss": 0.3, "accuracy_ppm": 900_000}]) == [
        "accuracy",
        "loss",
    ]
    board = RoundDashboard(7, session=object(), start=False)
    board.metrics_by_round = {5.0: rounds[0], 6.0: rounds[1]}
    board._render_plots()
    plots = board.plots.value
    assert "ppm" not in plots and "base_" not in plots
    assert re.findall(r'data-metric="([^"]+)"', plots) == ["mae", "loss"]
    for chart in plots.split("<svg")[1:]:
        labels = texts(chart, "x-tick")
        assert labels == ["5", "6"]
