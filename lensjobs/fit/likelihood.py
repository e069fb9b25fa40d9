"""The fit's log-likelihood in JAX: lenstronomy's numbers, compiled once, with gradients.

The model is the one of :mod:`lensjobs.fit.model`: SIE + external SHEAR (origin at the
cutout centre), a SERSIC_ELLIPSE lens light sharing the mass centre, a SERSIC_ELLIPSE
source with a GAUSSIAN knot, a PSF per band of two concentric Gaussians (a core, and a
wing :data:`WING_RATIO` times wider holding a share ``psf_wing`` of the light, the same in
every band) whose FWHM is a parameter too (with no wing, lenstronomy's ``GAUSSIAN`` type:
the image is averaged over sub-pixels, then filtered with each Gaussian out to ``radius``
pixels, edges repeated), and the linear amplitudes of light, source and knot solved per
band by weighted least squares (lenstronomy's ``multi-linear``), under a binary
likelihood mask. Beside them, fixed images of other objects' wings (``Data.others``:
light past the mask that the model must not take up) get linear amplitudes of their own;
with none, the likelihood is lenstronomy's. Every formula follows lenstronomy 1.14
(``NIE`` with s_scale 1e-10, ``SersicElliptic``, ``Gaussian``, ``SHEAR``,
``covariance_matrix``, ``get_param_WLS``); tests/test_likelihood.py holds the two to the
same log-likelihood. Parameters are a flat vector (:data:`NAMES`): lenstronomy's ``Param``
order and names, then the PSF FWHM per band and the PSF's wing share.

lenstronomy evaluates one parameter vector at a time in NumPy; here the data are
arguments of one compiled function (no recompilation per candidate of the same shape),
gradients and Hessians come from automatic differentiation, and many vectors (a PSO
swarm, MCMC walkers) are evaluated in one call.
"""

from __future__ import annotations

import os
from typing import NamedTuple

# A fit runs on the one CPU its job asked for: XLA's own thread pool would only contend.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

NAMES = (
    "theta_E_lens0",
    "e1_lens0",
    "e2_lens0",
    "gamma1_lens1",
    "gamma2_lens1",
    "R_sersic_source_light0",
    "n_sersic_source_light0",
    "e1_source_light0",
    "e2_source_light0",
    "center_x_source_light0",
    "center_y_source_light0",
    "sigma_source_light1",
    "center_x_source_light1",
    "center_y_source_light1",
    "R_sersic_lens_light0",
    "n_sersic_lens_light0",
    "e1_lens_light0",
    "e2_lens_light0",
    "center_x_lens_light0",
    "center_y_lens_light0",
    "fwhm_g",
    "fwhm_r",
    "fwhm_i",
    "psf_wing",
)
FWHM_PER_SIGMA = 2 * np.sqrt(2 * np.log(2))
# The PSF is a core Gaussian and a wing Gaussian this many times wider: real PSFs (Moffat-like,
# beta 2.5-4.5) have wings a single Gaussian lacks, and a single Gaussian fitted to them comes
# out 13-29 % too wide. Two Gaussians, the wing twice as wide with 27-57 % of the light, match
# such a Moffat's profile 14-56x more closely (least squares on the radial profile); a fixed
# ratio leaves one shape parameter, the wing's share.
WING_RATIO = 2.0
# Newton steps for the core's width from the PSF's FWHM: 4 reach 1e-9 for wing shares <= 0.9.
CORE_NEWTON_STEPS = 5
# lenstronomy's numerical guards, kept so that both give the same numbers.
SIE_S_SCALE = 1e-10
Q_MAX = 0.99999999
ELLIPTICITY_MAX = 0.9999
SERSIC_SMOOTHING = 1e-4
SERSIC_BN_MIN = 1e-5
# The SIE's deflection and a Sersic profile's cusp are singular at their centres: sampled at
# sub-pixel points, the likelihood's gradient in a centre spikes (~1/distance) wherever the
# centre crosses a sample, the optimiser settles on such a spike where no Hessian exists,
# and 17 of 98 model-breaking fits fell back on MCMC for it. Both are softened inside this
# share of a sub-pixel (the deflection tapered, see sie_deflection; r -> sqrt(r^2 + core^2)
# for a Sersic): smooth, and a core that 3x3 sub-pixels cannot resolve anyway.
CORE = 0.1
# Never NaN or +inf: a degenerate point (e.g. a source imaged nowhere) scores like
# lenstronomy's out-of-bounds penalty.
FLOOR = -1e18
# The normal equations' diagonal is raised by this share of itself (and TINY), so that a
# component imaged nowhere leaves them solvable.
RIDGE = 1e-12
TINY = 1e-300
INDEX = {name: k for k, name in enumerate(NAMES)}
SERSIC_KEYS = ("R_sersic", "n_sersic", "e1", "e2", "center_x", "center_y")
GAUSSIAN_KEYS = ("sigma", "center_x", "center_y")


class Data(NamedTuple):
    """Everything the likelihood needs of one candidate, as arrays (a JAX pytree)."""

    x: jax.Array  # (N, N) sub-pixel coordinates, arcsec, N = pixels x supersampling
    y: jax.Array
    image: jax.Array  # (B, n, n) data
    mask: jax.Array  # (n, n) 1 where pixels count
    weight: jax.Array  # (B, n, n) mask / lenstronomy's C_D of the data: least squares' weights
    background_var: jax.Array  # (B,) background rms squared
    exposure: jax.Array  # (B,) exposure time, for the Poisson term of the model's variance
    offsets: jax.Array  # (2R + 1,) the PSF's pixel offsets, -R..R
    shifts: jax.Array  # (2R + 1, n, n) 1 where an offset moves a pixel (edges repeated)
    pixscale: jax.Array  # () arcsec
    core: jax.Array  # () arcsec: the SIE and Sersic profiles are softened inside it
    others: jax.Array  # (K, n, n) other objects' wings, already seen through the PSF
    others_normal: jax.Array  # (B, K, K) their block of the normal equations (constant)
    others_rhs: jax.Array  # (B, K) and of the right-hand side


def shift_matrices(n: int, radius: int) -> np.ndarray:
    """``S[k] @ v`` is ``v`` moved by ``k - radius`` pixels with its edge values repeated
    (scipy.ndimage's mode 'nearest'), so that a 1-D filter of weights ``w`` is the matrix
    ``sum_k w[k] S[k]``."""
    matrices = np.zeros((2 * radius + 1, n, n))
    rows = np.arange(n)
    for k in range(2 * radius + 1):
        matrices[k, rows, np.clip(rows + k - radius, 0, n - 1)] = 1.0
    return matrices


def make_data(
    image: np.ndarray,
    mask: np.ndarray,
    background_rms: np.ndarray,
    exposure: np.ndarray,
    psf_radius: int,
    pixscale: float,
    supersampling: int,
    core: float | None = None,
    others: np.ndarray | None = None,
) -> Data:
    """A candidate's arrays; ``image`` is (B, n, n) in lenstronomy's frame (frame.py); the
    PSF reaches ``psf_radius`` pixels. ``core`` (arcsec) defaults to CORE of a sub-pixel;
    0 is lenstronomy's SIE and Sersic."""
    n = image.shape[-1]
    # Sub-pixel centres, as lenstronomy's util.make_subgrid places them.
    step = (np.arange(n * supersampling) + 0.5) / supersampling - 0.5
    coords = (step - (n - 1) / 2) * pixscale
    y, x = np.meshgrid(coords, coords, indexing="ij")
    image = np.asarray(image, dtype=float)
    exposure = np.asarray(exposure, dtype=float)
    background_var = np.asarray(background_rms, dtype=float) ** 2
    variance = np.maximum(image, 0) / exposure[:, None, None] + background_var[:, None, None]
    others = np.zeros((0, n, n)) if others is None else np.asarray(others, dtype=float)
    weight = np.asarray(mask, dtype=float) / variance
    others_normal = np.einsum("kij,bij,lij->bkl", others, weight, others)
    diagonal = np.diagonal(others_normal, axis1=1, axis2=2)
    # A zero placeholder gets a 1 on the diagonal, so that its amplitude solves to 0.
    placeholder = np.abs(others).sum(axis=(1, 2)) == 0
    others_normal = others_normal + np.eye(len(others)) * (
        RIDGE * diagonal[:, None] + TINY + placeholder
    )
    return Data(
        *(
            jnp.asarray(a)
            for a in (x, y, image, np.asarray(mask, dtype=float), weight, background_var)
        ),
        jnp.asarray(exposure),
        jnp.arange(-psf_radius, psf_radius + 1, dtype=float),
        jnp.asarray(shift_matrices(n, psf_radius)),
        jnp.asarray(float(pixscale)),
        jnp.asarray(CORE * pixscale / supersampling if core is None else float(core)),
        jnp.asarray(others),
        jnp.asarray(others_normal),
        jnp.asarray(np.einsum("kij,bij,bij->bk", others, weight, image)),
    )


def _phi_q(e1: jax.Array, e2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """lenstronomy's ellipticity2phi_q, with a gradient at e1 = e2 = 0."""
    round_ = e1**2 + e2**2 == 0
    phi = jnp.where(round_, 0.0, jnp.arctan2(e2, jnp.where(round_, 1.0, e1)) / 2)
    c = jnp.sqrt(jnp.where(round_, 1.0, e1**2 + e2**2))
    c = jnp.where(round_, 0.0, jnp.minimum(c, ELLIPTICITY_MAX))
    return phi, (1 - c) / (1 + c)


def sie_deflection(x, y, core, theta_e, e1, e2, cx, cy):
    """lenstronomy's SIE (an NIE with s_scale 1e-10): deflection at (x, y), tapered to zero
    inside ``core`` (arcsec) by ``psi / sqrt(psi^2 + core^2)``. Unlike an NIE core, which
    takes ~``core`` off the deflection at every radius (and so biases theta_E by as much),
    the taper changes it by ~(core / r)^2 / 2: 4e-5 at 1" for a core of 0.009"."""
    phi, q = _phi_q(e1, e2)
    q = jnp.minimum(q, Q_MAX)
    b = theta_e / jnp.sqrt((1 + q**2) / (2 * q)) * jnp.sqrt((1 + q**2) / 2)
    s = SIE_S_SCALE / jnp.sqrt(q)
    cos, sin = jnp.cos(phi), jnp.sin(phi)
    dx, dy = x - cx, y - cy
    xr, yr = cos * dx + sin * dy, -sin * dx + cos * dy
    psi = jnp.sqrt(q**2 * (s**2 + xr**2) + yr**2)
    root = jnp.sqrt(1 - q**2)
    ax = b / root * jnp.arctan(root * xr / (psi + s))
    ay = b / root * jnp.arctanh(root * yr / (psi + q**2 * s))
    taper = psi / jnp.sqrt(psi**2 + core**2)
    ax, ay = taper * ax, taper * ay
    return cos * ax - sin * ay, sin * ax + cos * ay


def sersic_parameters(p, component: str) -> tuple:
    """A Sersic component's parameters (SERSIC_KEYS order) from the vector ``p``;
    ``component`` is lenstronomy's suffix, e.g. ``source_light0``."""
    return _parameters(p, SERSIC_KEYS, component)


def gaussian_parameters(p, component: str) -> tuple:
    """A GAUSSIAN component's parameters (GAUSSIAN_KEYS order), as sersic_parameters."""
    return _parameters(p, GAUSSIAN_KEYS, component)


def _parameters(p, keys: tuple[str, ...], component: str) -> tuple:
    return tuple(p[INDEX[f"{k}_{component}"]] for k in keys)


def sersic(x, y, core, r_sersic, n_sersic, e1, e2, cx, cy):
    """lenstronomy's SERSIC_ELLIPSE of unit amplitude (product-average radius), softened
    inside ``core`` (arcsec)."""
    dx, dy = x - cx, y - cy
    norm = jnp.sqrt(jnp.maximum(jnp.abs(1 - e1**2 - e2**2), 1e-6))
    xe = ((1 - e1) * dx - e2 * dy) / norm
    ye = (-e2 * dx + (1 + e1) * dy) / norm
    r = jnp.maximum(jnp.sqrt(xe**2 + ye**2 + core**2), SERSIC_SMOOTHING)
    bn = jnp.maximum(1.9992 * n_sersic - 0.3271, SERSIC_BN_MIN)
    ratio = r / jnp.maximum(r_sersic, SERSIC_SMOOTHING)
    return jnp.exp(-bn * (ratio ** (1 / n_sersic) - 1))


def gaussian(x, y, sigma, cx, cy):
    """lenstronomy's GAUSSIAN of unit amplitude."""
    return jnp.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2)) / (2 * jnp.pi * sigma**2)


def unit_images(p: jax.Array, data: Data) -> jax.Array:
    """Lens light, the lensed source's Sersic and its knot, each of unit amplitude,
    (3, n, n), before the PSF."""
    theta_e, e1, e2, g1, g2 = (p[INDEX[n]] for n in NAMES[:5])
    cx, cy = p[INDEX["center_x_lens_light0"]], p[INDEX["center_y_lens_light0"]]
    ax, ay = sie_deflection(data.x, data.y, data.core, theta_e, e1, e2, cx, cy)
    bx = data.x - ax - (g1 * data.x + g2 * data.y)
    by = data.y - ay - (g2 * data.x - g1 * data.y)
    source = sersic(bx, by, data.core, *sersic_parameters(p, "source_light0"))
    knot = gaussian(bx, by, *gaussian_parameters(p, "source_light1"))
    light = sersic(data.x, data.y, data.core, *sersic_parameters(p, "lens_light0"))
    n = data.image.shape[-1]
    sub = data.x.shape[0] // n
    parts = jnp.stack([light, source, knot])
    return parts.reshape(len(parts), n, sub, n, sub).mean(axis=(2, 4)) * data.pixscale**2


def core_sigma(fwhm: jax.Array, wing: jax.Array) -> jax.Array:
    """The core Gaussian's sigma of a PSF ``(1 - wing) G(s) + wing G(WING_RATIO s)`` whose
    FWHM is ``fwhm``: Newton's method for the half-maximum radius ``t`` in units of ``s``,
    from the single Gaussian's (differentiable, as the steps are unrolled)."""
    k2 = WING_RATIO**2
    core, outer = 1 - wing, wing / k2
    t = jnp.sqrt(2 * jnp.log(2.0))
    for _ in range(CORE_NEWTON_STEPS):
        inner, wide = jnp.exp(-(t**2) / 2), jnp.exp(-(t**2) / (2 * k2))
        excess = core * inner + outer * wide - (core + outer) / 2
        t = t + excess / (t * (core * inner + outer / k2 * wide))
    return fwhm / (2 * t)


def blur_matrices(fwhm: jax.Array, wing: jax.Array, data: Data) -> jax.Array:
    """The PSF's core and wing Gaussians of each band as matrices ``K`` (2, B, n, n):
    filtering an image with one is ``K @ image @ K.T`` (scipy.ndimage.gaussian_filter's
    weights, out to the radius)."""
    core = core_sigma(fwhm, wing) / data.pixscale
    sigma = jnp.stack([core, WING_RATIO * core])  # (2, B)
    weights = jnp.exp(-0.5 * (data.offsets / sigma[..., None]) ** 2)
    weights = weights / weights.sum(axis=-1, keepdims=True)
    return jnp.einsum("sbk,kij->sbij", weights, data.shifts)


def band_models(p: jax.Array, data: Data) -> tuple[jax.Array, jax.Array]:
    """The model image per band (B, n, n) and its linear amplitudes (B, 3 + K)."""
    parts, amplitudes = band_components(p, data)
    return parts.sum(axis=1), amplitudes


def band_components(p: jax.Array, data: Data) -> tuple[jax.Array, jax.Array]:
    """Each band's model as its components (B, 3 + K, n, n: unit_images, then the K
    other objects' wings), and their linear amplitudes (B, 3 + K), solved by weighted least
    squares."""
    units = unit_images(p, data)
    fwhm = jnp.stack([p[INDEX[f"fwhm_{b}"]] for b in "gri"])
    wing = p[INDEX["psf_wing"]]
    blur = blur_matrices(fwhm, wing, data)
    shares = jnp.stack([1 - wing, wing])
    blurred = jnp.einsum("s,sbij,cjk,sblk->bcil", shares, blur, units, blur)
    weight = data.weight
    normal = jnp.einsum("bcij,bij,bdij->bcd", blurred, weight, blurred)
    normal = normal + jnp.eye(units.shape[0]) * (
        RIDGE * jnp.diagonal(normal, axis1=1, axis2=2)[:, None] + TINY
    )
    # The other objects' block is constant; only its coupling to the model is computed.
    coupling = jnp.einsum("bcij,bij,kij->bck", blurred, weight, data.others)
    normal = jnp.concatenate(
        [
            jnp.concatenate([normal, coupling], axis=2),
            jnp.concatenate([jnp.swapaxes(coupling, 1, 2), data.others_normal], axis=2),
        ],
        axis=1,
    )
    rhs = jnp.einsum("bcij,bij,bij->bc", blurred, weight, data.image)
    rhs = jnp.concatenate([rhs, data.others_rhs], axis=1)
    amplitudes = jnp.linalg.solve(normal, rhs[..., None])[..., 0]
    others = jnp.broadcast_to(data.others, (blurred.shape[0], *data.others.shape))
    parts = jnp.concatenate([blurred, others], axis=1)
    return amplitudes[..., None, None] * parts, amplitudes


def log_likelihood(p: jax.Array, data: Data) -> jax.Array:
    """lenstronomy's image log-likelihood summed over bands (no bounds, no priors)."""
    model, _ = band_models(p, data)
    variance = (
        jnp.maximum(model, 0) / data.exposure[:, None, None] + data.background_var[:, None, None]
    )
    value = -0.5 * jnp.sum(data.mask * (model - data.image) ** 2 / variance)
    return jnp.where(jnp.isfinite(value), value, FLOOR)


value = jax.jit(log_likelihood)
value_and_grad = jax.jit(jax.value_and_grad(log_likelihood))
hessian = jax.jit(jax.hessian(log_likelihood))
values = jax.jit(jax.vmap(log_likelihood, in_axes=(0, None)))
components = jax.jit(band_components)
