"""Weight extraction by least squares over random mat-vecs (Gokmen 2021, Eq. 4) against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from inmaterio.crossbars.extraction import MatVecAccumulator, closed_form_error_std, extract_weights, one_hot_weights
from inmaterio.crossbars.layers import AnalogLinear
from inmaterio.crossbars.tile import AnalogTile, IOConfig, TileConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def noisy_tile(n_in: int, n_out: int, sigma: float, seed: int = 0) -> AnalogTile:
    """Additive Gaussian output noise of std ``sigma``; weight_range 1 makes normalised units weight units."""
    return AnalogTile(n_in, n_out, TileConfig(io=IOConfig(output_noise=sigma), weight_range=1.0), seed=seed, dtype=torch.float64)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-6)])
@pytest.mark.parametrize("n_reads", [20, 57])
def test_a_noiseless_ideal_tile_is_recovered_exactly_from_in_features_reads(dtype, tol, n_reads):
    tile = AnalogTile(20, 7, seed=3, dtype=dtype)
    est = extract_weights(tile, n_reads, torch.Generator().manual_seed(0), batch=8)
    assert est.shape == (7, 20) and est.dtype == torch.float64
    assert torch.allclose(est, tile.weight.detach().double(), atol=tol, rtol=0)


def test_the_error_std_with_gaussian_output_noise_is_sigma_sqrt_3_over_n():
    """Var(W_est_ij) = sigma^2 [M_xx^-1]_jj, M_xx ~ n/3 I for x ~ U[-1, 1]: 4096 entries, std known to ~1.1 %."""
    sigma, n_in, n_out, n = 0.1, 16, 256, 8192
    tile = noisy_tile(n_in, n_out, sigma, seed=1)
    err = extract_weights(tile, n, torch.Generator().manual_seed(1), batch=1000) - tile.weight.detach()
    measured = float(err.std())
    assert abs(float(err.mean())) < 4 * measured / math.sqrt(err.numel())  # unbiased
    assert measured == pytest.approx(closed_form_error_std(sigma, n, n_in), rel=0.05)
    assert measured == pytest.approx(sigma * math.sqrt(3 / n), rel=0.05)
    assert abs(measured / (sigma * math.sqrt(2 / n)) - 1) > 0.1  # a wrong E[x^2] (1/2) would be caught


def test_fewer_reads_give_the_larger_error_of_the_finite_sample_formula():
    """Near n = in the inverse-Wishart factor 3 / (n - in - 1) matters; sigma sqrt(3 / n) would be 2x too small."""
    sigma, n_in, n_out, n = 0.1, 32, 256, 160
    tile = noisy_tile(n_in, n_out, sigma, seed=2)
    err = extract_weights(tile, n, torch.Generator().manual_seed(2)) - tile.weight.detach()
    assert float(err.std()) == pytest.approx(closed_form_error_std(sigma, n, n_in), rel=0.08)
    assert float(err.std()) > 1.05 * closed_form_error_std(sigma, n)


@pytest.mark.parametrize("repeats", [1, 4])
def test_one_hot_reads_have_error_std_sigma_over_sqrt_repeats(repeats):
    sigma, n_in, n_out = 0.05, 64, 256
    tile = noisy_tile(n_in, n_out, sigma, seed=4)
    err = one_hot_weights(tile, repeats=repeats) - tile.weight.detach()
    assert err.shape == (n_out, n_in)
    assert float(err.std()) == pytest.approx(sigma / math.sqrt(repeats), rel=0.04)  # 16384 entries: ~0.6 %


def test_one_hot_of_a_noiseless_tile_is_its_weights():
    tile = AnalogTile(9, 5, seed=0, dtype=torch.float64)
    assert torch.allclose(one_hot_weights(tile), tile.weight.detach(), atol=1e-14, rtol=0)


def test_streaming_in_batches_equals_one_big_batch():
    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(1000, 12, generator=g) * 2 - 1, torch.randn(1000, 3, generator=g)
    one = MatVecAccumulator(12, 3)
    one.add(x, y)
    many = MatVecAccumulator(12, 3)
    for start in range(0, 1000, 77):
        many.add(x[start : start + 77], y[start : start + 77])
    assert many.n_reads == one.n_reads == 1000
    assert torch.allclose(many.m_xx, one.m_xx, atol=1e-10) and torch.allclose(many.m_yx, one.m_yx, atol=1e-10)
    assert torch.allclose(many.estimate(), one.estimate(), atol=1e-12, rtol=0)
    ref = torch.linalg.lstsq(x.double(), y.double()).solution.t()  # the same least squares, solved another way
    assert torch.allclose(one.estimate(), ref, atol=1e-10, rtol=0)


def test_extraction_can_continue_an_accumulator():
    tile = noisy_tile(8, 4, 0.1, seed=6)
    acc = MatVecAccumulator(8, 4)
    g = torch.Generator().manual_seed(0)
    first = extract_weights(tile, 100, g, accumulator=acc)
    second = extract_weights(tile, 900, g, accumulator=acc)
    assert acc.n_reads == 1000
    w = tile.weight.detach()
    assert float((second - w).std()) < float((first - w).std())


def test_the_digital_scale_offset_and_compensation_are_undone():
    tile = AnalogTile(10, 6, seed=1, dtype=torch.float64)
    with torch.no_grad():
        tile.output_scale.copy_(torch.linspace(0.5, 2.0, 6, dtype=torch.float64))
        tile.output_offset.copy_(torch.linspace(-1.0, 1.0, 6, dtype=torch.float64))
        tile.compensation.fill_(1.7)
    w = tile.weight.detach()
    assert torch.allclose(extract_weights(tile, 40, torch.Generator().manual_seed(0)), w, atol=1e-10, rtol=0)
    assert torch.allclose(one_hot_weights(tile), w, atol=1e-12, rtol=0)
    with torch.no_grad():
        tile.output_scale[4] = 0.0
    with pytest.raises(ValueError, match="output column 4 has a zero digital gain"):
        one_hot_weights(tile)


def test_the_effective_weights_are_what_is_read():
    tile = AnalogTile(10, 6, seed=1, dtype=torch.float64)
    drifted = tile.weight.detach() * 0.9
    tile.set_effective_weight(drifted)
    assert torch.allclose(one_hot_weights(tile), drifted, atol=1e-12, rtol=0)


def test_a_split_analog_linear_layer_is_read_as_one_matrix_without_its_bias():
    layer = AnalogLinear(20, 9, tile_config=TileConfig(max_rows=8, max_cols=4), seed=0, dtype=torch.float64)
    assert len(layer.tiles) == 9
    layer.train()
    est = extract_weights(layer, 60, torch.Generator().manual_seed(0))
    assert torch.allclose(est, layer.get_weight(), atol=1e-10, rtol=0)
    assert layer.training  # the mode is restored


def test_bad_inputs_name_the_value():
    tile = AnalogTile(16, 4, seed=0)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"n_reads = 15 must be an integer >= in_features = 16"):
        extract_weights(tile, 15, g)
    with pytest.raises(ValueError, match=r"n_reads = 20\.0"):
        extract_weights(tile, 20.0, g)
    with pytest.raises(ValueError, match=r"batch = 0"):
        extract_weights(tile, 20, g, batch=0)
    with pytest.raises(ValueError, match=r"repeats = 0"):
        one_hot_weights(tile, repeats=0)
    with pytest.raises(ValueError, match="no integer in_features"):
        extract_weights(torch.nn.ReLU(), 20, g)

    acc = MatVecAccumulator(3, 2)
    with pytest.raises(ValueError, match=r"inputs must have shape \(batch, 3\), got \(5, 4\)"):
        acc.add(torch.zeros(5, 4), torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"outputs must have shape \(batch, 2\), got \(5,\)"):
        acc.add(torch.zeros(5, 3), torch.zeros(5))
    with pytest.raises(ValueError, match="5 inputs but 4 outputs"):
        acc.add(torch.zeros(5, 3), torch.zeros(4, 2))
    x = torch.ones(5, 3)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="inputs have 1 NaN or infinite entries of 15"):
        acc.add(x, torch.zeros(5, 2))
    assert acc.n_reads == 0  # nothing was added
    acc.add(torch.ones(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="2 reads cannot determine 3 weights per output; need at least in_features = 3"):
        acc.estimate()
    acc.add(torch.ones(4, 3), torch.zeros(4, 2))  # six reads, all the same direction
    with pytest.raises(ValueError, match="the 6 inputs span only 1 of 3 dimensions"):
        acc.estimate()
    with pytest.raises(ValueError, match="in_features = 0"):
        MatVecAccumulator(0, 2)

    broken = AnalogTile(4, 3, seed=0)
    broken.set_weight(torch.full((3, 4), float("nan")))
    with pytest.raises(ValueError, match="outputs have 12 NaN or infinite entries of 12"):
        extract_weights(broken, 4, g)
    with pytest.raises(ValueError, match="outputs have 12 NaN or infinite entries of 12"):
        one_hot_weights(broken)
