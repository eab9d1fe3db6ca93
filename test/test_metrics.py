"""Fusion metrics on synthetic images: identities, constants and closed-form values (no data needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import convolve2d

from fusion_ros.errors import ConfigError, InputError
from fusion_ros.metrics import (
    HIGHER_IS_BETTER,
    METRICS,
    PRESETS,
    Convention,
    SourcePair,
    average_gradient,
    compute_metrics,
    entropy,
    fmi,
    get_convention,
    ms_ssim_index,
    mutual_information,
    nabf,
    qabf,
    scd,
    spatial_frequency,
    ssim_index,
    standard_deviation,
    vifp,
)

CANON = PRESETS["canonical"]


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    """A smooth textured 'visible' and a blobby 'infrared' image, uint8, 64×80."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:80]
    vi = 120 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0) + rng.normal(0, 8, (64, 80))
    ir = 40 + 180 * np.exp(-((xx - 50) ** 2 + (yy - 30) ** 2) / 120.0) + rng.normal(0, 4, (64, 80))
    ir8, vi8 = np.clip(ir, 0, 255).astype(np.uint8), np.clip(vi, 0, 255).astype(np.uint8)
    ir8.setflags(write=False)  # shared by the module's tests: read-only
    vi8.setflags(write=False)
    return ir8, vi8


# ------------------------------------------------------------------ identities


def test_identity_image_gives_the_ideal_values(scene: tuple[np.ndarray, np.ndarray]) -> None:
    """F = A = B: perfect similarity, zero error, no artefacts; MI is twice the entropy."""
    a = scene[1]
    m = compute_metrics(a, a, a, "canonical")
    assert m["SSIM"] == pytest.approx(1.0, abs=1e-12)
    assert m["MS_SSIM"] == pytest.approx(1.0, abs=1e-12)
    assert m["CC"] == pytest.approx(1.0, abs=1e-12)
    assert m["FMI"] == pytest.approx(1.0, abs=1e-12)
    assert m["VIF"] == pytest.approx(2.0, abs=1e-9)  # VIFp(A,A) + VIFp(B,A)
    assert m["MSE"] == 0.0 and m["RMSE"] == 0.0 and m["PSNR"] == math.inf
    assert m["Nabf"] == 0.0
    assert m["MI"] == pytest.approx(2 * entropy(a.astype(float)), rel=1e-12)
    assert m["SCD"] == 0.0  # F − B is constant: its correlation is undefined and counts 0


def test_qabf_of_identity_is_the_product_of_the_sigmoid_maxima(scene: tuple[np.ndarray, np.ndarray]) -> None:
    """With G = A = 1 everywhere, Q = Tg/(1+e^{−15·0.5}) · Ta/(1+e^{−22·0.2}) exactly."""
    a = scene[1].astype(float)
    expected = 0.9994 / (1 + math.exp(-15 * 0.5)) * 0.9879 / (1 + math.exp(-22 * 0.2))
    assert qabf(a, a, a, CANON) == pytest.approx(expected, rel=1e-12)
    # The reference codes set G = g_F (not 1) on equal gradients: Q then follows g_F's own scale.
    qa = 0.9879 / (1 + math.exp(-22 * 0.2))
    for scale in (1.0, 1 / 255):
        x = a / round(1 / scale) if scale < 1 else a
        sx = convolve2d(x, [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], mode="same")
        sy = convolve2d(x, [[1, 2, 1], [0, 0, 0], [-1, -2, -1]], mode="same")
        g = np.hypot(sx, sy)
        expected_quirk = np.sum(g * 0.9994 / (1 + np.exp(-15 * (g - 0.5))) * qa) / np.sum(g)
        quirk = qabf(a, a, a, CANON.replace(qabf_equal="gF", qabf_scale=scale))
        assert quirk == pytest.approx(expected_quirk, rel=1e-9)
    assert qabf(a, a, a, CANON.replace(qabf_equal="gF", qabf_scale=1 / 255)) < expected - 0.2


def test_vifp_of_an_image_against_itself_is_one(scene: tuple[np.ndarray, np.ndarray]) -> None:
    a = scene[0].astype(float)
    assert vifp(a, a) == pytest.approx(1.0, abs=1e-9)
    assert vifp(a, np.full_like(a, 100.0)) < 0.05  # a flat image keeps no information


# ------------------------------------------------------------------ constant images


def test_constant_fused_image_has_no_information_or_detail(scene: tuple[np.ndarray, np.ndarray]) -> None:
    ir, vi = scene
    f = np.full(ir.shape, 128, np.uint8)
    m = compute_metrics(ir, vi, f, "canonical", ["EN", "SD", "SF", "AG", "MI", "CC"])
    assert m == {"EN": 0.0, "SD": 0.0, "SF": 0.0, "AG": 0.0, "MI": 0.0, "CC": 0.0}
    # A black image has no gradient anywhere (even at the zero-padded border): G = 0, Q ≤ Tg/(1+e^7.5).
    black = np.zeros_like(ir)
    assert 0 < compute_metrics(ir, vi, black, "canonical", ["Qabf"])["Qabf"] < 0.9994 / (1 + math.exp(7.5))


def test_constant_sources_give_finite_values() -> None:
    z = np.full((32, 32), 7, np.uint8)
    m = compute_metrics(z, z, z, "cddfuse")
    assert m["VIF"] == 2.0  # no reference information: 1.0 per source, as the CDDFuse evaluator
    assert all(math.isfinite(v) for k, v in m.items() if k != "PSNR")


# ------------------------------------------------------------------ closed forms


def test_entropy_closed_forms() -> None:
    two = np.zeros((16, 16))
    two[:, 8:] = 200
    assert entropy(two) == pytest.approx(1.0)
    ramp = np.arange(256, dtype=float).reshape(16, 16)
    assert entropy(ramp) == pytest.approx(8.0)
    assert entropy(ramp + 0.6, binning="floor") == pytest.approx(8.0)  # floor keeps 256 levels
    assert entropy(ramp + 0.6, binning="round") < 8.0  # round pushes 255.6 onto 256 → clipped to 255


def test_standard_deviation_and_the_tang_uint8_artefact() -> None:
    check = np.indices((8, 8)).sum(0) % 2 * 255.0
    assert standard_deviation(check) == pytest.approx(127.5)
    # MATLAB uint8: F − μ clips at 0, the square clips at 255.
    small = np.array([[0.0, 10.0]])
    assert standard_deviation(small, uint8_saturation=True) == pytest.approx(math.sqrt(25 / 2))
    big = np.array([[0.0, 100.0]])
    assert standard_deviation(big, uint8_saturation=True) == pytest.approx(math.sqrt(255 / 2))


def test_spatial_frequency_of_stripes() -> None:
    m, n, a = 10, 12, 30.0
    stripes = np.tile((np.arange(n) % 2) * a, (m, 1))
    assert spatial_frequency(stripes) == pytest.approx(a)
    assert spatial_frequency(stripes, denominator="pixels") == pytest.approx(a * math.sqrt((n - 1) / n))


def test_average_gradient_of_a_ramp() -> None:
    m, n, k = 9, 11, 3.0
    ramp = np.tile(np.arange(n) * k, (m, 1))
    per_pixel = k / math.sqrt(2)
    assert average_gradient(ramp, denominator="pixels") == pytest.approx(per_pixel)
    assert average_gradient(ramp) == pytest.approx(per_pixel * m * n / ((m - 1) * (n - 1)))


def test_mi_bits_and_nats_differ_by_ln2(scene: tuple[np.ndarray, np.ndarray]) -> None:
    ir, vi = (x.astype(float) for x in scene)
    f = (ir + vi) / 2
    bits = mutual_information(ir, vi, f, CANON)
    nats = mutual_information(ir, vi, f, CANON.replace(mi_base=math.e))
    assert nats == pytest.approx(bits * math.log(2), rel=1e-12)
    assert 0 < bits < entropy(ir) + entropy(vi)


def test_tang_mi_merges_254_and_255_in_the_joint_histogram_only() -> None:
    a = np.array([[254.0, 255.0, 0.0, 0.0]])
    # Standard: F = A, MI(A;A) = H(A) = 1.5 bits per source.
    assert mutual_information(a, a, a, CANON) == pytest.approx(3.0)
    # Tang: H(A) and H(F) keep 3 levels, the joint only 2 → MI = 1.5 + 1.5 − 1.0 per source.
    assert mutual_information(a, a, a, PRESETS["tang"]) == pytest.approx(4.0)


def test_psnr_mse_rmse_closed_forms(scene: tuple[np.ndarray, np.ndarray]) -> None:
    a = scene[1].astype(float)[:, :64]
    f = a + 10.0
    m = compute_metrics(a, a, f, "canonical", ["MSE", "RMSE", "PSNR"])
    assert m["MSE"] == pytest.approx(100.0)
    assert m["RMSE"] == pytest.approx(10.0)
    assert m["PSNR"] == pytest.approx(20 * math.log10(255 / 10))
    # Tang: MSE on [0,1] but peak 255 → +20·log10(255) dB.
    t = compute_metrics(a, a, f, PRESETS["tang"], ["MSE", "PSNR"])
    assert t["MSE"] == pytest.approx(100.0 / 255**2)
    assert t["PSNR"] == pytest.approx(m["PSNR"] + 20 * math.log10(255))
    # VIFB: "mse" = √Σd² / (M·N) = 10 / √(M·N).
    v = compute_metrics(a, a, f, PRESETS["vifb"], ["RMSE", "PSNR"])
    assert v["RMSE"] == pytest.approx(10.0 / math.sqrt(a.size))
    assert v["PSNR"] == pytest.approx(20 * math.log10(255 / math.sqrt(v["RMSE"])))
    # CDDFuse: peak = max(F).
    z = compute_metrics(a, a, f, "cddfuse", ["PSNR"])
    assert z["PSNR"] == pytest.approx(20 * math.log10(f.max() / 10))


def test_correlations(scene: tuple[np.ndarray, np.ndarray]) -> None:
    ir, vi = (x.astype(float) for x in scene)
    m = compute_metrics(ir, ir, 2 * ir + 3, "canonical", ["CC"])
    assert m["CC"] == pytest.approx(1.0)
    f = (ir + vi) / 2
    assert scd(ir, vi, f) == pytest.approx(scd(vi, ir, f))
    # SCD of the average: F − B = (A − B)/2 and F − A = (B − A)/2.
    r = np.corrcoef((ir - vi).ravel(), ir.ravel())[0, 1] + np.corrcoef((vi - ir).ravel(), vi.ravel())[0, 1]
    assert scd(ir, vi, f) == pytest.approx(r)


def test_ssim_window_range_and_combination(scene: tuple[np.ndarray, np.ndarray]) -> None:
    ir, vi = (x.astype(float) for x in scene)
    # SSIM is invariant to scaling the images and L together.
    c = CANON
    assert ssim_index(ir * 2, vi * 2, c.replace(ssim_data_range=510.0)) == pytest.approx(ssim_index(ir, vi, c))
    # A tiny L makes the constants negligible: values move towards the structure-only term.
    assert ssim_index(ir, vi, c.replace(ssim_data_range=2.0)) < ssim_index(ir, vi, c)
    f = (ir + vi) / 2
    s_sum = compute_metrics(ir, vi, f, c.replace(ssim_combine="sum"), ["SSIM"])["SSIM"]
    s_mean = compute_metrics(ir, vi, f, c, ["SSIM"])["SSIM"]
    assert s_sum == pytest.approx(2 * s_mean)


def test_ms_ssim_handles_small_images(scene: tuple[np.ndarray, np.ndarray]) -> None:
    ir, vi = (x.astype(float)[:23, :31] for x in scene)
    assert ms_ssim_index(vi, vi) == pytest.approx(1.0)
    assert 0.0 <= ms_ssim_index(ir, vi) < 1.0


def test_nabf_counts_only_invented_edges(scene: tuple[np.ndarray, np.ndarray]) -> None:
    ir, vi = (x.astype(float) for x in scene)
    clean = nabf(ir, vi, np.maximum(ir, vi), CANON)
    noisy = nabf(ir, vi, np.maximum(ir, vi) + np.random.default_rng(1).normal(0, 25, ir.shape), CANON)
    assert 0.0 <= clean < noisy <= 1.0


def test_fmi_range(scene: tuple[np.ndarray, np.ndarray]) -> None:
    ir, vi = (x.astype(float) for x in scene)
    value = fmi(ir, vi, (ir + vi) / 2, CANON)
    assert 0.0 < value < 1.0
    for feature in ("gradient", "dct"):
        assert 0.0 < fmi(ir, vi, (ir + vi) / 2, CANON.replace(fmi_feature=feature)) <= 1.0


# ------------------------------------------------------------------ conventions and inputs


def test_vifb_per_channel_equals_grey_for_grey_images(scene: tuple[np.ndarray, np.ndarray]) -> None:
    """A grey image stored as three equal channels scores like the grey image (SF aside: VIFB folds channels)."""
    ir, vi = scene
    f = ((ir.astype(int) + vi) // 2).astype(np.uint8)
    rgb = lambda x: np.repeat(x[..., None], 3, axis=2)  # noqa: E731
    names = [m for m in METRICS if m not in ("SF", "FMI")]
    grey = compute_metrics(ir, vi, f, "vifb", names)
    colour = compute_metrics(rgb(ir), rgb(vi), rgb(f), "vifb", names)
    for k in names:
        assert colour[k] == pytest.approx(grey[k], rel=1e-12, abs=1e-12), k


def test_vifb_scores_each_colour_channel() -> None:
    rng = np.random.default_rng(2)
    ir = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    vi = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    f = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    per = [compute_metrics(ir, vi[..., k], f[..., k], "vifb", ["EN", "Qabf"]) for k in range(3)]
    both = compute_metrics(ir, vi, f, "vifb", ["EN", "Qabf"])
    for k in ("EN", "Qabf"):
        assert both[k] == pytest.approx(np.mean([p[k] for p in per]))
    # SF runs over the three channels side by side.
    folded = np.concatenate([f[..., k] for k in range(3)], axis=1).astype(float)
    assert compute_metrics(ir, vi, f, "vifb", ["SF"])["SF"] == pytest.approx(spatial_frequency(folded, denominator="pixels"))


def test_uint8_and_float_inputs_agree(scene: tuple[np.ndarray, np.ndarray]) -> None:
    ir, vi = scene
    f = np.maximum(ir, vi)
    a = compute_metrics(ir, vi, f, "cddfuse")
    b = compute_metrics(ir.astype(np.float32), vi.astype(float), f.astype(float), "cddfuse")
    assert a == pytest.approx(b)


def test_source_pair_reuse_matches_fresh_computation(scene: tuple[np.ndarray, np.ndarray]) -> None:
    ir, vi = scene
    pair = SourcePair(ir, vi, "vifb")
    for f in (np.maximum(ir, vi), np.minimum(ir, vi), ((ir.astype(int) + vi) // 2).astype(np.uint8)):
        assert pair.score(f) == pytest.approx(compute_metrics(ir, vi, f, "vifb"))


def test_presets_and_errors(scene: tuple[np.ndarray, np.ndarray]) -> None:
    ir, vi = scene
    assert set(PRESETS) == {"canonical", "vifb", "cddfuse", "tang"}
    assert get_convention("tang") is PRESETS["tang"]
    custom = Convention(mi_base=math.e)
    assert get_convention(custom) is custom
    assert not HIGHER_IS_BETTER["Nabf"] and HIGHER_IS_BETTER["Qabf"]
    with pytest.raises(ConfigError, match="unknown metric preset"):
        compute_metrics(ir, vi, vi, "matlab")
    with pytest.raises(ConfigError, match="unknown metric"):
        compute_metrics(ir, vi, vi, "vifb", ["EN", "QABF"])
    with pytest.raises(InputError, match="sizes differ|fused image is"):
        compute_metrics(ir, vi, vi[:10], "vifb")
    with pytest.raises(InputError, match="uint8 or float"):
        compute_metrics(ir.astype(np.uint16), vi, vi)
