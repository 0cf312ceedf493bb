"""lstmkit.analysis.worked_unit: the lesson's arithmetic against an independent computation (the
math module only), the LSTMCell holding the lesson's weights against the explanation, and a
unit trained from random weights to the same job."""

import math

import pytest
import torch

from lstmkit.analysis import worked_unit as wu

# the lesson's weights, written out again: (short-term weight, input weight, bias)
LESSON = {"f": (2.70, 1.63, 1.62), "i": (2.00, 1.65, 0.62), "g": (1.41, 0.94, -0.32),
          "o": (4.38, -0.19, 0.59)}
A, B = (0, 0.5, 0.25, 1), (1, 0.5, 0.25, 1)


def sig(a):
    return 1 / (1 + math.exp(-a))


def by_hand(long, short, x):
    """One step from the equations, independently of the library."""
    pre = {k: w_s * short + w_x * x + b for k, (w_s, w_x, b) in LESSON.items()}
    f, i, g, o = sig(pre["f"]), sig(pre["i"]), math.tanh(pre["g"]), sig(pre["o"])
    c = f * long + i * g
    return {"a_f": pre["f"], "f": f, "a_i": pre["i"], "i": i, "a_g": pre["g"], "g": g, "c": c,
            "a_o": pre["o"], "o": o, "h": o * math.tanh(c)}


def test_weights_constant_is_the_lesson():
    assert {k: (v["short"], v["input"], v["bias"]) for k, v in wu.WEIGHTS.items()} == LESSON


def test_worked_step_numbers_and_text():
    text, values = wu.explain_step(2, 1, 1)
    want = by_hand(2, 1, 1)
    for key, value in want.items():
        assert values[key] == pytest.approx(value, abs=1e-12), key
    assert want["a_f"] == pytest.approx(5.95) and f"{want['f']:.3f}" == "0.997"
    assert "(1 x 2.70) + (1 x 1.63) + 1.62 = 5.95" in text
    assert "sigma(5.95) = 0.997, so 99.7% of the long-term memory is kept" in text
    assert "(1 x 2.00) + (1 x 1.65) + 0.62 = 4.27" in text
    assert f"sigma(4.27) = {want['i']:.3f}, so {100 * want['i']:.1f}%" in text
    assert f"(1 x 1.41) + (1 x 0.94) - 0.32 = 2.03, tanh(2.03) = {want['g']:.3f}" in text
    assert f"New long-term memory: {2 * want['f']:.3f} + {want['i'] * want['g']:.3f} = " \
           f"{want['c']:.3f}" in text
    assert f"(1 x 4.38) + (1 x -0.19) + 0.59 = 4.78, sigma(4.78) = {want['o']:.3f}" in text
    assert text.rstrip().endswith(f"= {want['h']:.3f}.")


@pytest.mark.parametrize("inputs", [A, B])
def test_sequence_against_hand_computation(inputs):
    days, prediction = wu.run_sequence(inputs)
    long = short = 0.0
    for day, x in zip(days, inputs):
        v = by_hand(long, short, x)
        long, short = v["c"], v["h"]
        assert day["long"] == pytest.approx(long, abs=1e-12)
        assert day["short"] == pytest.approx(short, abs=1e-12)
    assert prediction == pytest.approx(short, abs=1e-12)


@pytest.mark.parametrize("dtype, engine, atol", [(torch.float32, "auto", 1e-6),
                                                 (torch.float32, "python", 1e-6),
                                                 (torch.float64, "python", 1e-12)])
def test_lstm_cell_with_the_lessons_weights_agrees(dtype, engine, atol):
    cell = wu.unit_cell(dtype=dtype)
    cell.engine = engine
    assert cell.weight_ih.flatten().tolist() == pytest.approx([1.65, 1.63, 0.94, -0.19])
    assert cell.weight_hh.flatten().tolist() == pytest.approx([2.00, 2.70, 1.41, 4.38])
    assert cell.bias_ih.tolist() == pytest.approx([0.62, 1.62, -0.32, 0.59])
    assert cell.bias_hh.tolist() == [0, 0, 0, 0]
    inputs = torch.tensor([A, B], dtype=dtype).t()                   # (T, 2): both companies
    h = c = torch.zeros(2, 1, dtype=dtype)
    days = [wu.run_sequence(A)[0], wu.run_sequence(B)[0]]
    with torch.no_grad():
        for t, x_t in enumerate(inputs):
            h, c = cell(x_t[:, None], (h, c))
            for b in range(2):
                assert float(c[b, 0]) == pytest.approx(days[b][t]["long"], abs=atol)
                assert float(h[b, 0]) == pytest.approx(days[b][t]["short"], abs=atol)
    assert wu.cell_weights(wu.unit_cell(dtype=torch.float64)) == wu.WEIGHTS


def test_companies_predictions_and_full_text():
    _, a = wu.run_sequence(A)
    _, b = wu.run_sequence(B)
    assert abs(a) < 0.05 and b > 0.95                                  # measured: 0.006, 0.969
    text = wu.explain()
    assert "(1 x 2.70) + (1 x 1.63) + 1.62 = 5.95" in text
    assert "Company A" in text and "Company B" in text
    assert f"Prediction for day 5: {a:.3f}" in text and f"Prediction for day 5: {b:.3f}" in text
    assert text.count("Day ") == 8
    assert "Company" not in wu.explain(companies=False)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_train_unit_reaches_the_targets(seed):
    result = wu.train_unit(seed=seed)
    assert abs(result["predictions"]["A"] - 0.0) < 0.1
    assert abs(result["predictions"]["B"] - 1.0) < 0.1
    assert result["loss"] < result["initial_loss"]
    assert set(result["weights"]) == set(wu.WEIGHTS)
    assert set(result["weights"]["f"]) == {"short", "input", "bias"}
