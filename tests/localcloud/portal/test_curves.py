"""Learning curves from the recipe's output lines, and their chart geometry."""

from quickstart.localcloud.portal.curves import chart, parse_curve

OUTPUT = """\
Training 98778 parameters in 10 parameter tensors.
Finished Epoch[1 of 3]: [Training] loss = 0.412345 * 60000, metric = 12.34% * 60000 3.123s (19212.3 samples/s);
Finished Epoch[2 of 3]: [Training] loss = 0.101010 * 60000, metric = 3.10% * 60000 3.001s (19993.3 samples/s);
Finished Epoch[2 of 3]: [Training] loss = 0.101010 * 60000, metric = 3.10% * 60000 3.001s (19993.3 samples/s);
Final Results: Minibatch[1-10]: errs = 1.25% * 10000
"""


def test_one_point_per_finished_epoch_and_the_final_test_error():
    curve = parse_curve("job", OUTPUT)
    assert curve.epochs == [(1, 0.412345, 12.34), (2, 0.10101, 3.1)]  # a repeated line once
    assert curve.total_epochs == 3 and curve.test_error == 1.25


def test_no_finished_epoch_means_no_chart():
    assert parse_curve("job", "Training 98778 parameters").epochs == []
    assert chart([parse_curve("job", "")], "loss") is None


def test_the_chart_spans_every_epoch_and_falls_with_the_loss():
    drawn = chart([parse_curve("a", OUTPUT)], "loss", width=640, height=260)
    (line,) = drawn.lines
    (x1, y1, _), (x2, y2, _) = line["points"]
    assert x1 == drawn.left and x2 < drawn.left + drawn.plot_width  # epoch 3 of 3 still to come
    assert y2 > y1  # lower loss, lower on the chart (SVG y grows downwards)
    assert [label for _, label in drawn.x_ticks] == [1, 2, 3]
    assert drawn.y_ticks[-1][1] == "0.5"  # the axis ends at a round number above 0.412


def test_compared_jobs_share_one_chart_with_one_line_each():
    other = OUTPUT.replace("12.34%", "20.00%")
    drawn = chart([parse_curve("a", OUTPUT), parse_curve("b", other)], "error")
    assert [line["label"] for line in drawn.lines] == ["a", "b"]
    assert drawn.lines[0]["colour"] != drawn.lines[1]["colour"]
