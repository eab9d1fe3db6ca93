"""Image-fusion quality metrics (numpy/scipy only), with the conventions of the published toolboxes.

Every metric is written once, as a function of 2-D float planes on the 0–255 grey scale
(``a`` = infrared, ``b`` = visible, ``f`` = fused). The places where the published evaluation
codes disagree — MI in bits or nats, the SSIM window and data range, how colour is reduced,
the PSNR peak, and a few integer-overflow artefacts — are fields of a :class:`Convention`, so a
number can always be traced to the convention that produced it. Four presets are provided:

``canonical``
    The textbook definitions: BT.601 luma of colour inputs, MI in bits, SD/SF/AG as in
    Eskicioglu & Fisher / Cui et al. (AG over the (M−1)(N−1) interior), Qabf with G = 1 where
    the gradients are equal, SSIM/MS-SSIM with an 11×11 Gaussian (σ = 1.5), L = 255, 'valid'
    region, *mean* over the two sources; PSNR with peak 255; FMI on raw pixels.

``vifb``
    VIFB's MATLAB toolbox (Zhang et al., CVPRW 2020; ``xingchenzhang/VIFB`` @ 22b2ea9d).
    Colour is not reduced: **every metric is computed per R, G, B channel** against the same
    channel of each source (a grey source is reused for every channel) and averaged. EN bins
    by floor; MI min–max normalises each image to 0–255 first and uses the natural log (nats);
    SF divides both sums by M·N and, for an RGB fused image, runs over the three channels
    placed side by side (MATLAB folds the third dimension into the second); Qabf works on
    images multiplied by 255 with G = g_F where the gradients are equal; SSIM is the *sum* of
    the two SSIMs (Gaussian 11×11, L = 255, valid); PSNR/RMSE use VIFB's "mse"
    = √Σ(x−y)² / (M·N) (not a mean square), so values (~53–60 dB) are not standard PSNR.

``cddfuse``
    The Python ``Evaluator`` of CDDFuse/DDFM/EMMA (``Zhaozixiang1228/MMIF-CDDFuse`` @ fd8da1f3,
    scikit-image 0.19, scikit-learn 1.1): colour reduced to BT.601 grey rounded to integers;
    MI in nats; AG is a mean over all M·N pixels; SF over the difference arrays; Qabf on
    0–255 with G = g_F where equal; **SSIM = SSIM(F,A) + SSIM(F,B) with skimage 0.19's
    defaults: 7×7 uniform window, sample covariance, reflect padding cropped by 3 pixels, and
    data_range = 2** (the float dtype range), which makes the constants negligible; PSNR peak
    = max(F).

``tang``
    The Tang-lab MATLAB toolbox as it produced the 2022 spreadsheet ``Metric_TNO.xlsx``
    (``Linfeng-Tang/Evaluation-for-Image-Fusion`` @ 5d6c43a, May 2022), **artefacts included**:
    colour reduced by MATLAB ``rgb2gray`` (rounded); MI in bits with its joint histogram built
    on ``uint8 + 1``, which saturates so grey levels 254 and 255 share a bin; SD computed in
    saturating uint8 arithmetic (``F − μ`` clips at 0, the square clips at 255: SD ≈ 8–10
    instead of ≈ 35); SF on [0,1] images (≈ 1/255 of the usual value); VIF with the first-scale
    products ``ref.*ref``, ``dist.*dist`` and ``ref.*dist`` saturating at 255 (inflates VIF);
    MSE on [0,1] with PSNR peak 255 (+48.13 dB over standard PSNR); Qabf on [0,1] with
    G = g_F where equal; Nabf on [0,1] (its T_d = 2 threshold then keeps almost no edge).
    The 2022 toolbox reported MEF-SSIM as "SSIM"; that metric is not implemented here, so
    under ``tang`` SSIM is the 2023 toolbox's: MATLAB ``ssim`` defaults (Gaussian σ = 1.5,
    11×11, replicate padding, DynamicRange 1 on 0–255 data), mean over the two sources. FMI
    under ``tang`` is the raw-pixel FMI; the toolbox's "FMI_pixel" actually used MATLAB
    ``edge`` features, which are not reproduced.

Validated (``test/test_metrics_reference.py``): ``vifb`` reproduces VIFB's per-image EN, SD, SF,
AG, MI, Qabf, SSIM, PSNR and RMSE to every printed digit for 9 of its 10 stored methods (the
stored SwinFusion JPEGs are not the files VIFB scored: within 1.5 %); ``cddfuse`` reproduces the
SDNet row of CDDFuse's TNO table (6 of 8 columns round to the printed value, SD and SF are one
unit off in the second decimal); ``tang`` reproduces all 11 columns of the 2022 spreadsheet per
image, artefacts included (≤ 3e-8 relative).

A metric here is a function of 2-D planes; :class:`SourcePair` keeps what depends only on the
sources, so scoring ten methods on one pair computes the sources' edge maps, local statistics
and histograms once.

Use :func:`compute_metrics` for images (uint8 or 0–255 float, grey (H,W) or RGB (H,W,3)).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fusion_ros.color import BT601
from fusion_ros.errors import ConfigError, InputError

__all__ = [
    "HIGHER_IS_BETTER",
    "METRICS",
    "PRESETS",
    "PRESET_NOTES",
    "Convention",
    "Plane",
    "SourcePair",
    "average_gradient",
    "compute_metrics",
    "correlation_coefficient",
    "entropy",
    "fmi",
    "get_convention",
    "ms_ssim_index",
    "mutual_information",
    "nabf",
    "qabf",
    "scd",
    "spatial_frequency",
    "ssim_index",
    "standard_deviation",
    "vifp",
]

#: Every metric name, in report order.
METRICS: tuple[str, ...] = (
    "EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "Nabf",
    "SSIM", "MS_SSIM", "PSNR", "MSE", "RMSE", "CC", "FMI",
)  # fmt: skip

#: Direction of each metric: True when a larger value means a better fusion.
HIGHER_IS_BETTER: Mapping[str, bool] = {m: m not in ("Nabf", "MSE", "RMSE") for m in METRICS}

# MATLAB rgb2gray coefficients (rows of the inverse NTSC transform); the textbook grey is BT.601.
_MATLAB_GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)

# Xydeas–Petrović constants shared by all toolboxes (Qabf), and Petrović/Kumar's (Nabf).
_QABF = {"Tg": 0.9994, "kg": -15.0, "Dg": 0.5, "Ta": 0.9879, "ka": -22.0, "Da": 0.8}
_NABF = {"Td": 2.0, "wmin": 0.001, "Lg": 1.5, "Nrg": 0.9999, "kg": 19.0, "sg": 0.5, "Nra": 0.9995, "ka": 22.0, "sa": 0.5}

# Wang, Simoncelli & Bovik 2003 scale weights for MS-SSIM.
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


@dataclass(frozen=True)
class Convention:
    """How each metric is computed where the published toolboxes disagree.

    Attributes:
        name: preset name (informational).
        color: ``"luma"`` reduces colour images to grey (``gray``) before every metric;
            ``"per_channel"`` computes every metric per R, G, B channel of the fused image
            against the same channel of each source and averages (VIFB).
        gray: colour → grey: ``"bt601"`` (float), ``"bt601_round"`` (rounded, as OpenCV + round),
            ``"matlab"`` (MATLAB ``rgb2gray`` on uint8, rounded).
        en_binning: grey level of a pixel for the EN histogram: ``"round"`` or ``"floor"``.
        mi_base: logarithm base of MI (2 → bits, e → nats).
        mi_minmax: min–max normalise each image to 0–255 (then round) before MI (VIFB).
        mi_saturating_joint: joint histogram on ``uint8 + 1`` with saturation, so 254 and 255
            share a bin while the marginal entropies keep them apart (Tang 2022).
        sd_uint8: SD in saturating uint8 arithmetic (Tang 2022 artefact).
        sf_denominator: ``"differences"`` (mean over each difference array) or ``"pixels"``
            (both sums divided by M·N, VIFB).
        sf_fold_channels: per-channel mode only: SF of the fused channels side by side (VIFB).
        sf_scale: multiply images by this before SF (1/255 reproduces Tang 2022's [0,1] SF).
        ag_denominator: ``"interior"`` ((M−1)(N−1), MATLAB toolboxes) or ``"pixels"`` (M·N, CDDFuse).
        vif_uint8_products: first-scale VIF products saturate at 255 (Tang 2022 artefact).
        qabf_equal: G^{XF} where g_X == g_F: ``"one"`` (the definition) or ``"gF"`` (what all
            three reference codes do; then the result depends on ``qabf_scale``).
        qabf_scale: scale of the images Qabf sees (255 for VIFB's ``255*im2double(double)``,
            1/255 for Tang 2022's [0,1] inputs).
        nabf_scale: scale of the images Nabf sees (its T_d = 2 threshold is absolute).
        ssim_window: ``"gaussian"`` (σ = 1.5) or ``"uniform"``.
        ssim_size: window side.
        ssim_data_range: L in C1 = (K1·L)², C2 = (K2·L)².
        ssim_region: ``"valid"`` (no padding), ``"reflect_crop"`` (reflect padding, then the
            border of half a window dropped — scikit-image) or ``"replicate"`` (replicate
            padding, full image — MATLAB ``ssim``).
        ssim_sample_covariance: unbiased (N−1) local (co)variances (scikit-image).
        ssim_combine: ``"sum"`` or ``"mean"`` of SSIM(F,A) and SSIM(F,B) (also MS-SSIM).
        mse_kind: ``"mean_square"`` or ``"vifb_root"`` (VIFB's √Σ(x−y)² / (M·N)).
        mse_range: 255 → MSE on grey levels; 1 → on images divided by 255 (Tang).
        psnr_peak: PSNR peak; ``None`` → max(F) (CDDFuse).
        fmi_feature: FMI feature map: ``"none"`` (pixels), ``"gradient"`` (x-derivative), ``"dct"``.
    """

    name: str = "canonical"
    color: Literal["luma", "per_channel"] = "luma"
    gray: Literal["bt601", "bt601_round", "matlab"] = "bt601"
    en_binning: Literal["round", "floor"] = "round"
    mi_base: float = 2.0
    mi_minmax: bool = False
    mi_saturating_joint: bool = False
    sd_uint8: bool = False
    sf_denominator: Literal["differences", "pixels"] = "differences"
    sf_fold_channels: bool = False
    sf_scale: float = 1.0
    ag_denominator: Literal["interior", "pixels"] = "interior"
    vif_uint8_products: bool = False
    qabf_equal: Literal["one", "gF"] = "one"
    qabf_scale: float = 1.0
    nabf_scale: float = 1.0
    ssim_window: Literal["gaussian", "uniform"] = "gaussian"
    ssim_size: int = 11
    ssim_data_range: float = 255.0
    ssim_region: Literal["valid", "reflect_crop", "replicate"] = "valid"
    ssim_sample_covariance: bool = False
    ssim_combine: Literal["sum", "mean"] = "mean"
    mse_kind: Literal["mean_square", "vifb_root"] = "mean_square"
    mse_range: float = 255.0
    psnr_peak: float | None = 255.0
    fmi_feature: Literal["none", "gradient", "dct"] = "none"

    def replace(self, **changes: object) -> Convention:
        """A copy with some fields changed (e.g. ``get_convention("vifb").replace(mi_base=2)``)."""
        return dataclasses.replace(self, **changes)


#: The named presets; see the module docstring for what each one changes.
PRESETS: Mapping[str, Convention] = {
    "canonical": Convention(),
    "vifb": Convention(
        name="vifb",
        color="per_channel",
        gray="matlab",
        en_binning="floor",
        mi_base=math.e,
        mi_minmax=True,
        sf_denominator="pixels",
        sf_fold_channels=True,
        qabf_equal="gF",
        qabf_scale=255.0,
        ssim_combine="sum",
        mse_kind="vifb_root",
    ),
    "cddfuse": Convention(
        name="cddfuse",
        gray="bt601_round",
        mi_base=math.e,
        ag_denominator="pixels",
        qabf_equal="gF",
        ssim_window="uniform",
        ssim_size=7,
        ssim_data_range=2.0,
        ssim_region="reflect_crop",
        ssim_sample_covariance=True,
        ssim_combine="sum",
        psnr_peak=None,
    ),
    "tang": Convention(
        name="tang",
        gray="matlab",
        mi_saturating_joint=True,
        sd_uint8=True,
        sf_scale=1.0 / 255.0,
        vif_uint8_products=True,
        qabf_equal="gF",
        qabf_scale=1.0 / 255.0,
        nabf_scale=1.0 / 255.0,
        ssim_data_range=1.0,
        ssim_region="replicate",
        mse_range=1.0,
    ),
}

#: One line per preset for reports: the convention it follows and the numbers that look wrong without it.
PRESET_NOTES: Mapping[str, str] = {
    "canonical": "the textbook definitions (BT.601 luma, MI in bits, SSIM the mean over the two sources, "
    "MSE a mean square, PSNR with peak 255)",
    "vifb": "VIFB's MATLAB toolbox: every metric per RGB channel, SSIM the sum over the two sources (up to 2), "
    "MSE VIFB's √Σ(x−y)²/(M·N), so RMSE equals MSE and PSNR is not standard dB",
    "cddfuse": "the CDDFuse/DDFM/EMMA Python evaluator: BT.601 grey, SSIM the sum over the two sources (up to 2) "
    "with scikit-image 0.19's data_range 2, PSNR peak max(F)",
    "tang": "the Tang-lab MATLAB toolbox's 2022 spreadsheet, artefacts included: SD in saturating uint8 (≈ 8–10), "
    "saturating VIF products, SF on [0,1], PSNR 48 dB above standard",
}


def get_convention(convention: str | Convention) -> Convention:
    """A preset by name (``canonical``, ``vifb``, ``cddfuse``, ``tang``) or a :class:`Convention` as is."""
    if isinstance(convention, Convention):
        return convention
    try:
        return PRESETS[convention]
    except KeyError:
        raise ConfigError(f"unknown metric preset {convention!r}; valid presets: {', '.join(PRESETS)}") from None


# ---------------------------------------------------------------------------------------------
# Small exact helpers (MATLAB semantics where a reference depends on them)
# ---------------------------------------------------------------------------------------------


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """MATLAB ``round`` (half away from zero); numpy rounds half to even."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """1-D factor of MATLAB ``fspecial('gaussian', size, sigma)`` (separable, normalised).

    The 2-D kernel is the outer product of this with itself; fspecial's zeroing of entries below
    eps·max never triggers for the sizes used here.
    """
    r = (size - 1) / 2.0
    x = np.arange(size, dtype=np.float64) - r
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter(x: np.ndarray, w1d: np.ndarray, region: str) -> np.ndarray:
    """Separable 2-D correlation with ``w1d`` ⊗ ``w1d``.

    ``region``: ``"valid"`` (MATLAB filter2 'valid'), ``"reflect"`` / ``"nearest"`` (same size,
    scipy padding modes: half-sample symmetric / replicate).
    """
    from scipy import ndimage  # here, not at import: every fusion-ros command imports this module

    if region == "valid":
        r = len(w1d) // 2
        out = ndimage.correlate1d(x, w1d, axis=0, mode="constant")[r : x.shape[0] - r]
        return ndimage.correlate1d(out, w1d, axis=1, mode="constant")[:, r : x.shape[1] - r]
    out = ndimage.correlate1d(x, w1d, axis=0, mode=region)
    return ndimage.correlate1d(out, w1d, axis=1, mode=region)


def _scaled(x: np.ndarray, s: float) -> np.ndarray:
    """``x·s``, written as a division for down-scaling so [0,1] images are bit-identical to MATLAB's
    ``im2double`` (x/255 and x·(1/255) differ in the last bit, which Qabf's equality test sees)."""
    if s == 1.0:
        return x
    return x * s if s >= 1.0 else x / (1.0 / s)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation (MATLAB ``corr2``); 0 when either image is constant (undefined there)."""
    xc = x - x.mean()
    yc = y - y.mean()
    den = math.sqrt(float(np.sum(xc * xc)) * float(np.sum(yc * yc)))
    return float(np.sum(xc * yc)) / den if den > 0 else 0.0


def _entropy_of_counts(counts: np.ndarray, base: float) -> float:
    p = counts[counts > 0].astype(np.float64)
    p /= p.sum()
    return float(-(p * np.log(p)).sum() / math.log(base))


def _levels(x: np.ndarray, binning: str = "round") -> np.ndarray:
    """Integer grey levels 0..255 of a 0–255 plane."""
    q = np.floor(x) if binning == "floor" else np.floor(x + 0.5)
    return np.clip(q, 0, 255).astype(np.intp)


# ---------------------------------------------------------------------------------------------
# Planes: a 2-D image plus the derived quantities several metrics (and several fused images) reuse
# ---------------------------------------------------------------------------------------------


class Plane:
    """A 2-D float64 image on the 0–255 scale with memoised derived quantities.

    Source planes are built once per image pair and scored against every fused image, so their
    edge maps, local statistics and histograms are computed once instead of once per method —
    that halves the cost of Qabf and SSIM when ten methods are ranked on the same pairs.
    """

    __slots__ = ("_memo", "x")

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self._memo: dict[object, object] = {}

    def memo(self, key: object, fn: Callable[[np.ndarray], object]) -> object:
        """``fn(self.x)``, computed on first use for ``key``."""
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = fn(self.x)
            return value


def _plane(x: np.ndarray | Plane) -> Plane:
    return x if isinstance(x, Plane) else Plane(np.asarray(x, dtype=np.float64))


# ---------------------------------------------------------------------------------------------
# Metrics of the fused image alone
# ---------------------------------------------------------------------------------------------


def entropy(f: np.ndarray, *, binning: str = "round") -> float:
    """EN: Shannon entropy (bits) of the 256-bin grey histogram of ``f``."""
    return _entropy_of_counts(np.bincount(_levels(f, binning).ravel(), minlength=256), 2.0)


def standard_deviation(f: np.ndarray, *, uint8_saturation: bool = False) -> float:
    """SD: population standard deviation of ``f``.

    With ``uint8_saturation`` it reproduces MATLAB on a uint8 image: ``F − μ`` rounds and clips
    at 0 and the square clips at 255 (the Tang 2022 artefact; values ≈ 8–10).
    """
    if not uint8_saturation:
        return float(np.std(f))
    dev = np.clip(_round_half_away(f - f.mean()), 0, 255)
    sq = np.minimum(dev * dev, 255.0)
    return math.sqrt(float(sq.sum()) / f.size)


def spatial_frequency(f: np.ndarray, *, denominator: str = "differences") -> float:
    """SF = √(RF² + CF²) from squared horizontal and vertical first differences.

    ``denominator``: ``"differences"`` averages each difference array; ``"pixels"`` divides both
    sums by M·N (Eskicioglu & Fisher, VIFB).
    """
    dh = np.diff(f, axis=1)
    dv = np.diff(f, axis=0)
    if denominator == "pixels":
        return math.sqrt((float(np.sum(dh * dh)) + float(np.sum(dv * dv))) / f.size)
    return math.sqrt(float(np.mean(dh * dh)) + float(np.mean(dv * dv)))


def average_gradient(f: np.ndarray, *, denominator: str = "interior") -> float:
    """AG: √((∂x² + ∂y²)/2) with MATLAB ``gradient`` derivatives (central inside, one-sided at the
    border), summed and divided by (M−1)(N−1) (``"interior"``) or M·N (``"pixels"``)."""
    gy, gx = np.gradient(f)
    s = float(np.sum(np.sqrt((gx * gx + gy * gy) / 2.0)))
    m, n = f.shape
    return s / ((m - 1) * (n - 1)) if denominator == "interior" else s / (m * n)


# ---------------------------------------------------------------------------------------------
# Information metrics: MI
# ---------------------------------------------------------------------------------------------


def _mi_levels(x: np.ndarray, minmax: bool) -> np.ndarray:
    if not minmax:
        return _levels(x)
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:
        return np.zeros(x.shape, dtype=np.intp)
    return _round_half_away((x - lo) / (hi - lo) * 255.0).astype(np.intp)


def _mi_marginal(p: Plane, c: Convention) -> tuple[np.ndarray, float]:
    """(grey levels, entropy) of a plane under ``c``'s MI binning."""

    def build(x: np.ndarray) -> tuple[np.ndarray, float]:
        lv = _mi_levels(x, c.mi_minmax)
        return lv, _entropy_of_counts(np.bincount(lv.ravel(), minlength=256), c.mi_base)

    return p.memo(("mi", c.mi_minmax, c.mi_base), build)  # type: ignore[return-value]


def _mi(a: Plane, b: Plane, f: Plane, c: Convention) -> float:
    lf, hf = _mi_marginal(f, c)
    if c.mi_saturating_joint:
        lf = np.minimum(lf, 254)
    total = 0.0
    for src in (a, b):
        lx, hx = _mi_marginal(src, c)
        if c.mi_saturating_joint:
            lx = np.minimum(lx, 254)
        joint = np.bincount((lx * 256 + lf).ravel(), minlength=65536)
        total += hx + hf - _entropy_of_counts(joint, c.mi_base)
    return total


def mutual_information(a: np.ndarray, b: np.ndarray, f: np.ndarray, c: Convention = PRESETS["canonical"]) -> float:
    """MI = I(A;F) + I(B;F) over 256 grey levels (Qu et al. 2002), in base ``c.mi_base``."""
    return _mi(_plane(a), _plane(b), _plane(f), c)


# ---------------------------------------------------------------------------------------------
# Correlation metrics: SCD, CC
# ---------------------------------------------------------------------------------------------


def scd(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """SCD = r(F − B, A) + r(F − A, B) (Aslantas & Bendes 2015); a constant difference counts 0."""
    return _pearson(f - b, a) + _pearson(f - a, b)


def correlation_coefficient(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """CC = (r(A,F) + r(B,F)) / 2."""
    return (_pearson(a, f) + _pearson(b, f)) / 2.0


# ---------------------------------------------------------------------------------------------
# VIF (Sheikh & Bovik pixel-domain, multi-scale)
# ---------------------------------------------------------------------------------------------

_VIF_EPS = 1e-10
_VIF_SIGMA_NSQ = 2.0


def _vif_window(scale: int) -> np.ndarray:
    n = 2 ** (4 - scale + 1) + 1
    return _gaussian_1d(n, n / 5.0)


def _vif_pyramid(p: Plane, uint8_products: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per scale: (image, local mean, local variance); scales too small for their window are dropped."""

    def build(x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for scale in range(1, 5):
            w = _vif_window(scale)
            if scale > 1:
                x = _filter(x, w, "valid")[::2, ::2]
            if min(x.shape) < len(w):
                break
            mu = _filter(x, w, "valid")
            sq = np.minimum(x * x, 255.0) if (scale == 1 and uint8_products) else x * x
            out.append((x, mu, np.maximum(_filter(sq, w, "valid") - mu * mu, 0.0)))
        return out

    return p.memo(("vif", uint8_products), build)  # type: ignore[return-value]


def _vifp(ref: Plane, dist: Plane, uint8_products: bool) -> float:
    num = den = 0.0
    for scale, ((r, mu1, s1), (d, mu2, s2)) in enumerate(
        zip(_vif_pyramid(ref, uint8_products), _vif_pyramid(dist, uint8_products)), start=1
    ):
        rd = np.minimum(r * d, 255.0) if (scale == 1 and uint8_products) else r * d
        s12 = _filter(rd, _vif_window(scale), "valid") - mu1 * mu2
        s1 = s1.copy()
        g = s12 / (s1 + _VIF_EPS)
        sv = s2 - g * s12
        low1 = s1 < _VIF_EPS
        g[low1] = 0.0
        sv[low1] = s2[low1]
        s1[low1] = 0.0
        low2 = s2 < _VIF_EPS
        g[low2] = 0.0
        sv[low2] = 0.0
        neg = g < 0
        sv[neg] = s2[neg]
        g[neg] = 0.0
        sv[sv <= _VIF_EPS] = _VIF_EPS
        num += float(np.sum(np.log10(1.0 + g * g * s1 / (sv + _VIF_SIGMA_NSQ))))
        den += float(np.sum(np.log10(1.0 + s1 / _VIF_SIGMA_NSQ)))
    return num / den if den > 0 else 1.0


def vifp(ref: np.ndarray, dist: np.ndarray, *, uint8_products: bool = False) -> float:
    """Sheikh & Bovik's multi-scale pixel-domain VIF of ``dist`` against ``ref`` (σ_n² = 2, 0–255).

    Four scales with Gaussian windows of 17, 9, 5, 3 pixels (σ = N/5), MATLAB 'valid' filtering
    and 2× decimation, with the clamps of the LIVE code. A constant reference (no information)
    gives 1.0, as the CDDFuse evaluator does. ``uint8_products`` reproduces Tang 2022's
    saturating first-scale products.
    """
    return _vifp(_plane(ref), _plane(dist), uint8_products)


def _vif(a: Plane, b: Plane, f: Plane, c: Convention) -> float:
    """VIF as the fusion toolboxes report it: VIFp(A,F) + VIFp(B,F)."""
    return _vifp(a, f, c.vif_uint8_products) + _vifp(b, f, c.vif_uint8_products)


# ---------------------------------------------------------------------------------------------
# Edge metrics: Qabf, Nabf
# ---------------------------------------------------------------------------------------------


# conv2 kernels of the reference codes: x ("h3") and y ("h1") Sobel responses.
_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
_SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))


def _conv2_same(x: np.ndarray, h: tuple[tuple[float, ...], ...]) -> np.ndarray:
    """MATLAB ``conv2(x, h, 'same')`` for a 3×3 kernel with zero padding, summed in MATLAB's order.

    The terms h(u,v)·x(i−u+1, j−v+1) are accumulated with u fastest (column-major). The order
    matters only for the bit pattern of non-integer inputs, and there it decides which gradients
    compare equal in Qabf's ``g_X == g_F`` branch: this order reproduces the Tang toolbox's
    [0,1]-scaled Qabf to every digit where other orders differ by up to 2e-3.
    """
    m, n = x.shape
    xp = np.pad(x, 1)
    acc: np.ndarray | None = None
    for v in range(3):
        for u in range(3):
            if h[u][v] != 0.0:
                term = h[u][v] * xp[2 - u : 2 - u + m, 2 - v : 2 - v + n]
                acc = term if acc is None else acc + term
    assert acc is not None
    return acc


def _qabf_edges(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel strength and orientation arctan(s_y/s_x) (π/2 where s_x = 0), zero padding, as all references."""
    sx = _conv2_same(x, _SOBEL_X)
    sy = _conv2_same(x, _SOBEL_Y)
    g = np.sqrt(sx * sx + sy * sy)
    zero = sx == 0
    alpha = np.arctan(np.divide(sy, sx, out=np.zeros_like(sy), where=~zero))
    alpha[zero] = math.pi / 2
    return g, alpha


def _qabf_preservation(gx: np.ndarray, ax: np.ndarray, gf: np.ndarray, af: np.ndarray, c: Convention) -> np.ndarray:
    k = _QABF
    ratio = np.ones_like(gx)
    gt = gx > gf
    lt = gx < gf
    np.divide(gf, gx, out=ratio, where=gt)
    np.divide(gx, gf, out=ratio, where=lt)
    if c.qabf_equal == "gF":
        eq = ~(gt | lt)
        ratio[eq] = gf[eq]
    # Tg / (1 + exp(kg (G − Dg))) · Ta / (1 + exp(ka (A − Da))), A = 1 − |αx − αf| / (π/2).
    orient = 1.0 - np.abs(ax - af) * (2.0 / math.pi)
    return (k["Tg"] * k["Ta"]) / ((1.0 + np.exp(k["kg"] * (ratio - k["Dg"]))) * (1.0 + np.exp(k["ka"] * (orient - k["Da"]))))


def _qabf(a: Plane, b: Plane, f: Plane, c: Convention) -> float:
    s = c.qabf_scale
    ga, aa = a.memo(("qabf", s), lambda x: _qabf_edges(_scaled(x, s)))  # type: ignore[misc]
    gb, ab = b.memo(("qabf", s), lambda x: _qabf_edges(_scaled(x, s)))  # type: ignore[misc]
    gf, af = f.memo(("qabf", s), lambda x: _qabf_edges(_scaled(x, s)))  # type: ignore[misc]
    den = float(np.sum(ga) + np.sum(gb))
    if den == 0:
        return 0.0
    num = float(np.sum(_qabf_preservation(ga, aa, gf, af, c) * ga) + np.sum(_qabf_preservation(gb, ab, gf, af, c) * gb))
    return num / den


def qabf(a: np.ndarray, b: np.ndarray, f: np.ndarray, c: Convention = PRESETS["canonical"]) -> float:
    """Q^{AB/F} of Xydeas & Petrović: gradient-weighted preservation of source edges in ``f``.

    The planes are multiplied by ``c.qabf_scale`` first. The scale cancels out of the metric
    except through the ``qabf_equal == "gF"`` quirk, where G takes the fused gradient itself
    (small on [0,1] images, large on 0–255) instead of 1.
    """
    return _qabf(_plane(a), _plane(b), _plane(f), c)


def _nabf_edges(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kumar's /8 Sobel with 1-pixel mirror extension: strength and atan(gv/gh) (0 where both 0)."""
    from scipy import ndimage

    smooth = np.array([1.0, 2.0, 1.0]) / 8.0
    deriv = np.array([-1.0, 0.0, 1.0])
    gv = ndimage.correlate1d(ndimage.correlate1d(x, smooth, axis=0, mode="mirror"), deriv, axis=1, mode="mirror")
    gh = ndimage.correlate1d(ndimage.correlate1d(x, deriv, axis=0, mode="mirror"), smooth, axis=1, mode="mirror")
    g = np.sqrt(gh * gh + gv * gv)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.arctan(gv / gh)
    alpha[(gv == 0) & (gh == 0)] = 0.0
    return g, alpha


def _nabf(a: Plane, b: Plane, f: Plane, c: Convention) -> float:
    k = _NABF
    s = c.nabf_scale
    ga, aa = a.memo(("nabf", s), lambda x: _nabf_edges(_scaled(x, s)))  # type: ignore[misc]
    gb, ab = b.memo(("nabf", s), lambda x: _nabf_edges(_scaled(x, s)))  # type: ignore[misc]
    gf, af = f.memo(("nabf", s), lambda x: _nabf_edges(_scaled(x, s)))  # type: ignore[misc]

    def loss(gx: np.ndarray, ax: np.ndarray) -> np.ndarray:
        """1 − Q^{XF}: the edge information of X that F does not preserve."""
        ratio = np.zeros_like(gx)
        nz = (gx != 0) & (gf != 0)
        np.divide(np.minimum(gx, gf), np.maximum(gx, gf), out=ratio, where=nz)
        orient = np.abs(np.abs(ax - af) - math.pi / 2) * (2.0 / math.pi)
        qg = k["Nrg"] / (1.0 + np.exp(-k["kg"] * (ratio - k["sg"])))
        qa = k["Nra"] / (1.0 + np.exp(-k["ka"] * (orient - k["sa"])))
        return 1.0 - np.sqrt(qg * qa)

    wa = np.where(ga >= k["Td"], ga ** k["Lg"], k["wmin"])
    wb = np.where(gb >= k["Td"], gb ** k["Lg"], k["wmin"])
    artefact = (gf > ga) & (gf > gb)
    num = np.sum(np.where(artefact, loss(ga, aa) * wa + loss(gb, ab) * wb, 0.0))
    return float(num / np.sum(wa + wb))


def nabf(a: np.ndarray, b: np.ndarray, f: np.ndarray, c: Convention = PRESETS["canonical"]) -> float:
    """N^{AB/F}: fusion artefacts (Petrović, as modified by Shreyamsha Kumar 2015); lower is better.

    The share of the (g^1.5-weighted) source edge information lost where the fused image has a
    stronger gradient than both sources, i.e. edges the fusion invented. The T_d = 2 weight
    threshold is absolute, so the planes are first multiplied by ``c.nabf_scale``.
    """
    return _nabf(_plane(a), _plane(b), _plane(f), c)


# ---------------------------------------------------------------------------------------------
# Structural similarity: SSIM, MS-SSIM
# ---------------------------------------------------------------------------------------------


def _ssim_window(c: Convention) -> np.ndarray:
    if c.ssim_window == "gaussian":
        return _gaussian_1d(c.ssim_size, 1.5)
    return np.full(c.ssim_size, 1.0 / c.ssim_size)


_SSIM_REGION = {"valid": "valid", "reflect_crop": "reflect", "replicate": "nearest"}


def _ssim_stats(p: Plane, c: Convention) -> tuple[np.ndarray, np.ndarray]:
    """(local mean, local variance E[x²] − μ²) of a plane under ``c``'s window."""

    def build(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w, region = _ssim_window(c), _SSIM_REGION[c.ssim_region]
        mu = _filter(x, w, region)
        return mu, _filter(x * x, w, region) - mu * mu

    return p.memo(("ssim", c.ssim_window, c.ssim_size, c.ssim_region), build)  # type: ignore[return-value]


def _ssim_terms(x: Plane, y: Plane, c: Convention) -> tuple[np.ndarray, np.ndarray]:
    """Per-window luminance term l and contrast-structure term cs of SSIM(x, y)."""
    mx, vx = _ssim_stats(x, c)
    my, vy = _ssim_stats(y, c)
    vxy = _filter(x.x * y.x, _ssim_window(c), _SSIM_REGION[c.ssim_region]) - mx * my
    c1 = (0.01 * c.ssim_data_range) ** 2
    c2 = (0.03 * c.ssim_data_range) ** 2
    if c.ssim_sample_covariance:
        npix = c.ssim_size**2
        norm = npix / (npix - 1.0)
        vx, vy, vxy = vx * norm, vy * norm, vxy * norm
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    cs = (2 * vxy + c2) / (vx + vy + c2)
    if c.ssim_region == "reflect_crop":
        r = (c.ssim_size - 1) // 2
        lum, cs = lum[r:-r, r:-r], cs[r:-r, r:-r]
    return lum, cs


def ssim_index(x: np.ndarray, y: np.ndarray, c: Convention = PRESETS["canonical"]) -> float:
    """SSIM of Wang et al. 2004 between two planes: mean of the SSIM map (window/range per ``c``)."""
    lum, cs = _ssim_terms(_plane(x), _plane(y), c)
    return float(np.mean(lum * cs))


def _ssim(a: Plane, b: Plane, f: Plane, c: Convention) -> float:
    s = ssim_index(f, a, c) + ssim_index(f, b, c)  # type: ignore[arg-type]
    return s if c.ssim_combine == "sum" else s / 2.0


def _ms_pyramid(p: Plane) -> list[Plane]:
    """Five scales: 2×2 mean low-pass (MATLAB 'symmetric' border) and decimation by 2."""
    from scipy import ndimage


    def build(x: np.ndarray) -> list[Plane]:
        out = [p]
        for _ in range(len(_MS_SSIM_WEIGHTS) - 1):
            if min(x.shape) < 2:
                break
            x = ndimage.uniform_filter(x, 2, mode="reflect", origin=-1)[::2, ::2]
            out.append(Plane(x))
        return out

    return p.memo("ms_pyramid", build)  # type: ignore[return-value]


def _ms_ssim_pair(x: Plane, y: Plane, c: Convention) -> float:
    value = 1.0
    scales = list(zip(_ms_pyramid(x), _ms_pyramid(y)))
    for j, (xs, ys) in enumerate(scales):
        side = min(xs.x.shape)
        size = min(11, side if side % 2 else side - 1)
        cj = c.replace(ssim_window="gaussian", ssim_size=size, ssim_region="valid", ssim_sample_covariance=False)
        lum, cs = _ssim_terms(xs, ys, cj)
        weight = _MS_SSIM_WEIGHTS[j]
        term = float(np.mean(lum * cs)) if j == len(scales) - 1 else float(np.mean(cs))
        value *= max(term, 0.0) ** weight
    return value


def ms_ssim_index(x: np.ndarray, y: np.ndarray, c: Convention = PRESETS["canonical"]) -> float:
    """MS-SSIM (Wang, Simoncelli & Bovik 2003): 5 scales, 11×11 Gaussian, L = ``c.ssim_data_range``.

    Negative contrast-structure terms are clamped to 0 (a fractional power of a negative number
    is undefined). At scales where the image is smaller than the window the window is cut to the
    image (odd side), so small images (RoadScene has a 161-pixel side) still get a value.
    """
    return _ms_ssim_pair(_plane(x), _plane(y), c)


def _ms_ssim(a: Plane, b: Plane, f: Plane, c: Convention) -> float:
    s = _ms_ssim_pair(f, a, c) + _ms_ssim_pair(f, b, c)
    return s if c.ssim_combine == "sum" else s / 2.0


# ---------------------------------------------------------------------------------------------
# Error metrics: MSE, RMSE, PSNR
# ---------------------------------------------------------------------------------------------


def _mse_pair(x: np.ndarray, f: np.ndarray, c: Convention) -> float:
    d = x - f
    ss = float(np.sum(d * d)) * (c.mse_range / 255.0) ** 2
    if c.mse_kind == "vifb_root":
        return math.sqrt(ss) / d.size
    return ss / d.size


def _mse(a: Plane, b: Plane, f: Plane, c: Convention) -> float:
    """MSE of F against the two sources, averaged (on 0–255, or [0,1] with ``mse_range=1``)."""
    return (_mse_pair(a.x, f.x, c) + _mse_pair(b.x, f.x, c)) / 2.0


def _psnr(a: Plane, b: Plane, f: Plane, c: Convention) -> float:
    peak = float(f.x.max()) if c.psnr_peak is None else c.psnr_peak
    mse = _mse(a, b, f, c)
    return math.inf if mse == 0 else 20.0 * math.log10(peak / math.sqrt(mse))


def _rmse(a: Plane, b: Plane, f: Plane, c: Convention) -> float:
    mse = _mse(a, b, f, c)
    return mse if c.mse_kind == "vifb_root" else math.sqrt(mse)


# ---------------------------------------------------------------------------------------------
# FMI (feature mutual information)
# ---------------------------------------------------------------------------------------------


def _fmi_features(x: np.ndarray, feature: str) -> np.ndarray:
    if feature == "none":
        return x
    if feature == "gradient":
        return np.gradient(x, axis=1)
    if feature == "dct":
        from scipy.fft import dctn

        return dctn(x, norm="ortho")
    raise ConfigError(f"unknown FMI feature {feature!r}; valid: none, gradient, dct")


def _window_pdf(v: np.ndarray) -> np.ndarray:
    """Each row min–max normalised (a constant row → all ones) and divided by its sum."""
    lo, hi = v.min(axis=1, keepdims=True), v.max(axis=1, keepdims=True)
    span = hi - lo
    v = np.where(span > 0, (v - lo) / np.where(span > 0, span, 1.0), 1.0)
    return v / v.sum(axis=1, keepdims=True)


def _fmi_windows(xf: np.ndarray, ff: np.ndarray) -> np.ndarray:
    """Normalised feature MI of a batch of 3×3 windows (rows of 9), Haghighat et al.'s estimator.

    Each window is read as a 9-bin pdf; the joint pdf mixes the Fréchet bound (upper for positive
    correlation, lower for negative) with independence, in the ratio of the windows' correlation
    to the bound's correlation (Nelsen); nfmi = 2·MI / (H_x + H_f), 1 for identical windows.
    """
    idx = np.arange(1, 10, dtype=np.float64)
    px, pf = _window_pdf(xf), _window_pdf(ff)
    cx, cf = np.cumsum(px, axis=1), np.cumsum(pf, axis=1)
    dx, df = px - px.mean(axis=1, keepdims=True), pf - pf.mean(axis=1, keepdims=True)
    cov = np.sum(dx * df, axis=1)
    den = np.sqrt(np.sum(dx * dx, axis=1) * np.sum(df * df, axis=1))
    corr = np.divide(cov, den, out=np.zeros_like(cov), where=(cov != 0) & (den > 0))
    sdx = np.sqrt(np.maximum(np.sum(px * (idx * idx), axis=1) - np.sum(px * idx, axis=1) ** 2, 0.0))
    sdf = np.sqrt(np.maximum(np.sum(pf * (idx * idx), axis=1) - np.sum(pf * idx, axis=1) ** 2, 0.0))
    cfi, cxj = cf[:, :, None], cx[:, None, :]  # (window, f bin, x bin)
    indep = cfi * cxj
    bound = np.where((corr >= 0)[:, None, None], np.minimum(cfi, cxj), np.maximum(cfi + cxj - 1.0, 0.0))
    sd = sdx * sdf
    bound_corr = np.sum(bound - indep, axis=(1, 2)) / np.where(sd > 0, sd, 1.0)
    k = np.divide(corr, bound_corr, out=np.zeros_like(corr), where=(corr != 0) & (sd > 0) & (bound_corr != 0))
    # The bound's joint pdf: second differences of its CDF (zero on the lower edges).
    padded = np.pad(bound, ((0, 0), (1, 0), (1, 0)))
    jb = padded[:, 1:, 1:] - padded[:, :-1, 1:] - padded[:, 1:, :-1] + padded[:, :-1, :-1]
    kk = k[:, None, None]
    joint = kk * jb + (1.0 - kk) * (pf[:, :, None] * px[:, None, :])
    aj = np.abs(joint)  # the mixture can dip below 0; the reference takes real(−p·log2 p)
    hj = -np.sum(joint * np.log2(np.where(aj > 0, aj, 1.0)), axis=(1, 2))
    hx = -np.sum(px * np.log2(np.where(px > 0, px, 1.0)), axis=1)
    hf = -np.sum(pf * np.log2(np.where(pf > 0, pf, 1.0)), axis=1)
    mi = hx + hf - hj
    nfmi = np.divide(2.0 * mi, hx + hf, out=np.zeros_like(mi), where=(mi != 0) & (hx + hf > 0))
    return np.where(np.all(xf == ff, axis=1), 1.0, nfmi)


def _fmi_mean(x: np.ndarray, f: np.ndarray, chunk: int = 8192) -> float:
    xw = sliding_window_view(x, (3, 3)).reshape(-1, 9)
    fw = sliding_window_view(f, (3, 3)).reshape(-1, 9)
    total = 0.0
    for s in range(0, xw.shape[0], chunk):
        total += float(np.sum(_fmi_windows(xw[s : s + chunk], fw[s : s + chunk])))
    return total / xw.shape[0]


def _fmi(a: Plane, b: Plane, f: Plane, c: Convention) -> float:
    feat = c.fmi_feature
    fa, fb, ff = (p.memo(("fmi", feat), lambda x: _fmi_features(x, feat)) for p in (a, b, f))
    return (_fmi_mean(fa, ff) + _fmi_mean(fb, ff)) / 2.0  # type: ignore[arg-type]


def fmi(a: np.ndarray, b: np.ndarray, f: np.ndarray, c: Convention = PRESETS["canonical"]) -> float:
    """FMI (Haghighat et al. 2011): mean over 3×3 windows of (nfmi(A,F) + nfmi(B,F)) / 2 on the
    features named by ``c.fmi_feature``; 1 for ``f`` identical to both sources."""
    return _fmi(_plane(a), _plane(b), _plane(f), c)


# ---------------------------------------------------------------------------------------------
# Images → planes, and the public entry points
# ---------------------------------------------------------------------------------------------

_PlaneMetric = Callable[[Plane, Plane, Plane, Convention], float]

_PLANE_METRICS: dict[str, _PlaneMetric] = {
    "EN": lambda a, b, f, c: entropy(f.x, binning=c.en_binning),
    "SD": lambda a, b, f, c: standard_deviation(f.x, uint8_saturation=c.sd_uint8),
    "SF": lambda a, b, f, c: spatial_frequency(_scaled(f.x, c.sf_scale), denominator=c.sf_denominator),
    "AG": lambda a, b, f, c: average_gradient(f.x, denominator=c.ag_denominator),
    "MI": _mi,
    "SCD": lambda a, b, f, c: scd(a.x, b.x, f.x),
    "VIF": _vif,
    "Qabf": _qabf,
    "Nabf": _nabf,
    "SSIM": _ssim,
    "MS_SSIM": _ms_ssim,
    "PSNR": _psnr,
    "MSE": _mse,
    "RMSE": _rmse,
    "CC": lambda a, b, f, c: correlation_coefficient(a.x, b.x, f.x),
    "FMI": _fmi,
}


def _as_float(img: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(img, np.ndarray):
        raise InputError(f"{what} image must be a numpy array, not {type(img).__name__}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise InputError(f"{what} image must be HxW or HxWx3, got shape {img.shape}")
    if img.dtype != np.uint8 and img.dtype.kind != "f":
        raise InputError(f"{what} image must be uint8 or float on the 0-255 scale, not {img.dtype}")
    if min(img.shape[:2]) < 2:
        raise InputError(f"{what} image is too small for the metrics ({img.shape[1]}x{img.shape[0]})")
    return img.astype(np.float64)


def _to_gray(img: np.ndarray, gray: str) -> np.ndarray:
    if img.ndim == 2:
        return img
    weights = _MATLAB_GRAY if gray == "matlab" else BT601
    y = img[..., 0] * weights[0] + img[..., 1] * weights[1] + img[..., 2] * weights[2]
    if gray == "matlab":
        return np.clip(_round_half_away(y), 0, 255)
    return np.floor(y + 0.5) if gray == "bt601_round" else y


class SourcePair:
    """An infrared + visible pair prepared for scoring any number of fused images.

    Everything that depends only on the sources (grey conversion, edge maps, local statistics,
    histograms) is computed on first use and kept, so ranking many methods on the same pair
    costs little more than the fused-image side of each metric.

    Args:
        ir: infrared image, uint8 or 0–255 float, (H,W) or (H,W,3).
        vi: visible image of the same size.
        convention: a preset name (``canonical``, ``vifb``, ``cddfuse``, ``tang``) or a :class:`Convention`.
    """

    def __init__(self, ir: np.ndarray, vi: np.ndarray, convention: str | Convention = "canonical") -> None:
        self.convention = get_convention(convention)
        self._ir = _as_float(ir, "infrared")
        self._vi = _as_float(vi, "visible")
        if self._ir.shape[:2] != self._vi.shape[:2]:
            raise InputError(f"image sizes differ: infrared {self._ir.shape[:2]}, visible {self._vi.shape[:2]}")
        self._planes: dict[str, list[tuple[Plane, Plane]]] = {}

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the pair."""
        return self._ir.shape[0], self._ir.shape[1]

    def _source_planes(self, per_channel: bool) -> list[tuple[Plane, Plane]]:
        key = "channels" if per_channel else "grey"
        if key not in self._planes:
            if per_channel:
                # A grey source is the same Plane for every channel, so its cache is shared.
                ir, vi = (
                    [Plane(np.ascontiguousarray(x[..., k])) for k in range(3)] if x.ndim == 3 else [Plane(x)] * 3
                    for x in (self._ir, self._vi)
                )
                self._planes[key] = list(zip(ir, vi))
            else:
                gray = self.convention.gray
                self._planes[key] = [(Plane(_to_gray(self._ir, gray)), Plane(_to_gray(self._vi, gray)))]
        return self._planes[key]

    def planes(self, fused: np.ndarray) -> list[tuple[Plane, Plane, Plane]]:
        """The (infrared, visible, fused) planes the convention evaluates: one grey triple, or one per channel."""
        f = _as_float(fused, "fused")
        if f.shape[:2] != self.shape:
            raise InputError(f"fused image is {f.shape[1]}x{f.shape[0]}, sources are {self.shape[1]}x{self.shape[0]}")
        if self.convention.color == "per_channel" and f.ndim == 3:
            return [(a, b, Plane(np.ascontiguousarray(f[..., k]))) for k, (a, b) in enumerate(self._source_planes(True))]
        a, b = self._source_planes(False)[0]
        return [(a, b, Plane(_to_gray(f, self.convention.gray)))]

    def score(self, fused: np.ndarray, metrics: Iterable[str] | None = None) -> dict[str, float]:
        """Metrics of one fused image: ``{name: value}`` in the order asked (default :data:`METRICS`).

        Per-channel conventions average each metric over the channels (VIFB).
        """
        c = self.convention
        names = list(METRICS if metrics is None else metrics)
        unknown = [m for m in names if m not in _PLANE_METRICS]
        if unknown:
            raise ConfigError(f"unknown metric(s) {', '.join(unknown)}; valid metrics: {', '.join(METRICS)}")
        planes = self.planes(fused)
        out: dict[str, float] = {}
        for name in names:
            if name == "SF" and c.sf_fold_channels and len(planes) > 1:
                # MATLAB's [m,n] = size(rgb) folds the channels into the columns: SF runs over R|G|B.
                folded = np.concatenate([p[2].x for p in planes], axis=1)
                out[name] = spatial_frequency(_scaled(folded, c.sf_scale), denominator=c.sf_denominator)
                continue
            fn = _PLANE_METRICS[name]
            out[name] = float(np.mean([fn(a, b, f, c) for a, b, f in planes]))
        return out


def compute_metrics(
    ir: np.ndarray,
    vi: np.ndarray,
    fused: np.ndarray,
    convention: str | Convention = "canonical",
    metrics: Iterable[str] | None = None,
) -> dict[str, float]:
    """Metrics of one fused image against its infrared and visible sources.

    Args:
        ir: infrared image, uint8 or 0–255 float, (H,W) or (H,W,3).
        vi: visible image, same size.
        fused: fused image, same size.
        convention: a preset name (``canonical``, ``vifb``, ``cddfuse``, ``tang``) or a :class:`Convention`.
        metrics: names from :data:`METRICS` (default: all).

    Returns:
        ``{name: value}`` in the order asked. To score many fused images of one pair, build a
        :class:`SourcePair` once and call its ``score``.
    """
    return SourcePair(ir, vi, convention).score(fused, metrics)
