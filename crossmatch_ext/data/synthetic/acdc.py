"""ACDC-like short-axis cine-MRI stacks (two phases per patient), and the ACDC benchmark's file layouts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from .common import (
    check_counts,
    check_shape,
    checked_labeled_counts,
    draw_shape,
    shape_range,
    write_datalists,
    write_h5,
    write_list,
    write_nifti,
)
from .fields import SeedLike, as_generator, gaussian_field, polynomial_bias, rician, stream

__all__ = ["ACDC_SLICE_SPACING_MM", "make_acdc_case", "make_acdc_patient", "write_acdc_dataset"]

#: Distance between short-axis slices of the generated ACDC stacks (millimetres).
ACDC_SLICE_SPACING_MM = 10.0

_STREAM_ACDC_IDS = 21
_STREAM_ACDC_PATIENT = 22


def _profile(t: np.ndarray, t_equator: float, t_end: float) -> np.ndarray:
    """Half-ellipsoid radius profile along the long axis: 1 up to ``t_equator``, 0 from ``t_end`` on."""
    s = np.clip((t - t_equator) / max(t_end - t_equator, 1e-6), 0.0, None)
    return np.sqrt(np.clip(1.0 - s * s, 0.0, 1.0))


def _harmonics(rng: np.random.Generator, num_slices: int, amplitude: float) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Per-slice Fourier perturbations ``(order, amplitude[s], phase[s])`` varying smoothly along the slices."""
    out = []
    for order in (2, 3, 4):
        amp = rng.uniform(0.2, 1.0) * amplitude / (order - 1) * (1 + 0.3 * np.sin(np.linspace(0, 3, num_slices)))
        phase = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.25, num_slices))
        out.append((order, amp, phase))
    return out


def _radial_factor(theta: np.ndarray, harmonics: list[tuple[int, np.ndarray, np.ndarray]]) -> np.ndarray:
    """``1 + sum a_k cos(k theta + phi_k)`` with per-slice ``a_k`` and ``phi_k`` broadcast over ``(S, H, W)``."""
    factor = np.ones_like(theta)
    for order, amp, phase in harmonics:
        factor += (amp[:, None, None] * np.cos(order * theta + phase[:, None, None])).astype(np.float32)
    return factor


@dataclass
class _Heart:
    """Long-axis geometry of one patient's heart and the slice grid, shared by both frames (mm)."""

    s_count: int
    shape3: tuple[int, int, int]
    fov: float
    pixel: float
    yy: np.ndarray
    xx: np.ndarray
    t: np.ndarray
    r_endo_max: float
    thickness: float
    cy: np.ndarray
    cx: np.ndarray
    rho: np.ndarray
    theta: np.ndarray
    theta_rv: float
    endo_shape: np.ndarray
    epi_shape: np.ndarray
    rv_shape: np.ndarray
    r_endo_ed: np.ndarray
    r_epi_ed: np.ndarray
    contraction: float
    rv_contraction: float
    rv_wall: float
    rv_profile: np.ndarray
    papillary: list[tuple[float, float]]
    open_base: bool
    atrium_angle: float
    atrium_r: float
    height: int
    width: int
    rv_offset: float
    rv_radial: float
    rv_tangential: float
    gap_angle: float
    gap_width: float


@dataclass
class _Scene:
    """Background anatomy and image formation of one patient, shared by both frames."""

    body: np.ndarray
    fat_layer: np.ndarray
    muscle_layer: np.ndarray
    inner: np.ndarray
    texture: np.ndarray
    compartments: np.ndarray
    lungs: np.ndarray
    liver: np.ndarray
    aorta: np.ndarray
    spine: np.ndarray
    vessels: np.ndarray
    peri_fat_field: np.ndarray
    peri_fat_threshold: float
    levels: dict[str, float]
    flow: np.ndarray
    bias: np.ndarray
    coil: np.ndarray
    noise_sigma: float
    raw_max: float


@dataclass
class _FrameMasks:
    """The label and the unlabeled structures of one frame."""

    epi: np.ndarray
    rv: np.ndarray
    rv_free_wall: np.ndarray
    papillary_mask: np.ndarray
    unlabeled_blood: np.ndarray
    label: np.ndarray


def _acdc_heart(rng: np.random.Generator, num_slices: int, size: Sequence[int]) -> _Heart:
    """Long-axis geometry (``t`` = 0 at the base, 1 at the apex): ventricle radii, shapes, contraction, base."""
    if int(num_slices) < 3:
        raise ValueError(f"num_slices: expected at least 3 slices, found {num_slices}.")
    height, width = check_shape("size", size, 2, 32)
    s_count = int(num_slices)
    shape3 = (s_count, height, width)
    fov = rng.uniform(270.0, 330.0)
    pixel = fov / height
    yy = ((np.arange(height, dtype=np.float32) - height / 2.0) * pixel)[None, :, None]
    xx = ((np.arange(width, dtype=np.float32) - width / 2.0) * pixel)[None, None, :]

    # --- long-axis geometry (t = 0 at the base, 1 at the apex) ----------------------------------------------
    t = np.linspace(rng.uniform(-0.08, 0.04), rng.uniform(0.86, 1.0), s_count)
    t_equator = rng.uniform(0.1, 0.3)
    t_endo = rng.uniform(0.9, 1.02)
    t_epi = t_endo + rng.uniform(0.06, 0.14)
    t_rv = rng.uniform(0.72, 0.92)
    r_endo_max = rng.uniform(20.0, 27.0)
    thickness = rng.uniform(7.0, 10.0)
    heart_y = rng.uniform(-0.12, 0.02) * fov
    heart_x = rng.uniform(-0.05, 0.1) * fov
    drift = rng.uniform(-9.0, 9.0, 2)
    cy = (heart_y + drift[0] * t + rng.normal(0, 1.0, s_count)).astype(np.float32)[:, None, None]
    cx = (heart_x + drift[1] * t + rng.normal(0, 1.0, s_count)).astype(np.float32)[:, None, None]
    dy, dx = yy - cy, xx - cx
    rho = np.sqrt(dy * dy + dx * dx)
    theta = np.arctan2(dy, dx)
    theta_rv = np.pi + rng.uniform(-0.45, 0.35)  # right ventricle on the image's left, as in the benchmark
    endo_shape = _radial_factor(theta, _harmonics(rng, s_count, 0.06))
    epi_shape = _radial_factor(theta, _harmonics(rng, s_count, 0.035))
    rv_shape = _radial_factor(theta, _harmonics(rng, s_count, 0.05))

    r_endo_ed = r_endo_max * _profile(t, t_equator, t_endo)
    r_epi_ed = (r_endo_max + thickness) * _profile(t, t_equator, t_epi)
    contraction = rng.uniform(0.6, 0.8)
    rv_contraction = rng.uniform(0.65, 0.85)
    rv_offset, rv_radial, rv_tangential = rng.uniform(0.55, 0.8), rng.uniform(0.8, 1.05), rng.uniform(1.25, 1.6)
    rv_wall = rng.uniform(2.0, 3.5)
    rv_profile = _profile(t, 0.0, t_rv)
    papillary = [(theta_rv + np.pi + sign * rng.uniform(0.5, 0.9), rng.uniform(2.5, 4.0)) for sign in (-1, 1)]
    open_base = rng.uniform() < 0.7 and t[0] < 0.05
    gap_angle, gap_width = theta_rv + rng.uniform(0.6, 1.2), rng.uniform(0.7, 1.3)
    atrium_angle = theta_rv + np.pi + rng.uniform(-0.5, 0.5)
    atrium_r = rng.uniform(12.0, 18.0)
    return _Heart(
        s_count=s_count,
        shape3=shape3,
        fov=fov,
        pixel=pixel,
        yy=yy,
        xx=xx,
        t=t,
        r_endo_max=r_endo_max,
        thickness=thickness,
        cy=cy,
        cx=cx,
        rho=rho,
        theta=theta,
        theta_rv=theta_rv,
        endo_shape=endo_shape,
        epi_shape=epi_shape,
        rv_shape=rv_shape,
        r_endo_ed=r_endo_ed,
        r_epi_ed=r_epi_ed,
        contraction=contraction,
        rv_contraction=rv_contraction,
        rv_wall=rv_wall,
        rv_profile=rv_profile,
        papillary=papillary,
        open_base=open_base,
        atrium_angle=atrium_angle,
        atrium_r=atrium_r,
        height=height,
        width=width,
        rv_offset=rv_offset,
        rv_radial=rv_radial,
        rv_tangential=rv_tangential,
        gap_angle=gap_angle,
        gap_width=gap_width,
    )


def _acdc_scene(rng: np.random.Generator, heart: _Heart) -> _Scene:
    """Background anatomy (body, fat, muscle, lungs, liver, aorta, spine, vessels) and the scanner's appearance."""
    s_count, shape3, fov, pixel, yy, xx = heart.s_count, heart.shape3, heart.fov, heart.pixel, heart.yy, heart.xx
    t, r_endo_max, thickness, cy, cx = heart.t, heart.r_endo_max, heart.thickness, heart.cy, heart.cx
    theta_rv, height, width = heart.theta_rv, heart.height, heart.width
    plane = (1, height, width)
    px_per_10mm = 10.0 / pixel
    body_center = (rng.uniform(-0.05, 0.05) * fov, rng.uniform(-0.05, 0.05) * fov)
    body_a, body_b = fov * rng.uniform(0.3, 0.37), fov * rng.uniform(0.38, 0.46)
    by, bx = yy - np.float32(body_center[0]), xx - np.float32(body_center[1])
    body_q = np.sqrt((by / body_a) ** 2 + (bx / body_b) ** 2)
    body_q = body_q + np.float32(0.03) * gaussian_field(rng, plane, 3.0 * px_per_10mm)
    body = body_q < 1.0
    fat_depth = rng.uniform(8.0, 16.0) * (1.0 + 0.45 * gaussian_field(rng, plane, 2.0 * px_per_10mm))
    fat_layer = body & (body_q > 1.0 - fat_depth / body_a)
    muscle_depth = fat_depth + rng.uniform(10.0, 20.0) * (1.0 + 0.4 * gaussian_field(rng, plane, 2.0 * px_per_10mm))
    muscle_layer = body & ~fat_layer & (body_q > 1.0 - muscle_depth / body_a)
    inner = body & ~fat_layer & ~muscle_layer
    texture = 0.7 * gaussian_field(rng, shape3, (0.6, 0.8, 0.8)) + 0.7 * gaussian_field(rng, shape3, (1.0, 3.0, 3.0))
    compartments = gaussian_field(rng, shape3, (1.0, 1.2 * px_per_10mm, 1.2 * px_per_10mm))
    compartments = 1.0 / (1.0 + np.exp(-compartments / np.float32(0.3)))

    lungs = np.zeros(shape3, dtype=bool)
    lung_shape = gaussian_field(rng, shape3, (1.0, 2.0 * px_per_10mm, 2.0 * px_per_10mm))
    for side, (dist, ly0, la_, lb_) in (
        (1.0, (rng.uniform(55.0, 75.0), rng.uniform(-10.0, 25.0), rng.uniform(45.0, 65.0), rng.uniform(28.0, 42.0))),
        (-1.0, (rng.uniform(70.0, 95.0), rng.uniform(-25.0, 10.0), rng.uniform(40.0, 60.0), rng.uniform(22.0, 38.0))),
    ):
        q = np.sqrt(((yy - cy - np.float32(ly0)) / la_) ** 2 + ((xx - cx - np.float32(side * dist)) / lb_) ** 2)
        lungs |= (q + np.float32(0.12) * lung_shape) < 1.0
    lungs &= inner
    liver_r = rng.uniform(55.0, 80.0) * (0.6 + 0.6 * t)[:, None, None]
    liver_q = np.sqrt(
        (yy - cy - np.float32(rng.uniform(70.0, 100.0))) ** 2 + (xx - cx + np.float32(rng.uniform(0, 40.0))) ** 2
    )
    liver = (liver_q + np.float32(6.0) * lung_shape < liver_r) & inner & ~lungs
    aorta_angle = theta_rv + np.pi + rng.uniform(-0.9, -0.2)
    aorta_d = r_endo_max + thickness + rng.uniform(22.0, 32.0)
    aorta_r = rng.uniform(9.0, 13.0)
    aorta = np.sqrt(
        (yy - cy - np.float32(aorta_d * np.sin(aorta_angle))) ** 2
        + (xx - cx - np.float32(aorta_d * np.cos(aorta_angle))) ** 2
    ) < aorta_r
    spine_d = aorta_d + aorta_r + rng.uniform(12.0, 20.0)
    spine = np.sqrt(
        (yy - cy - np.float32(spine_d * np.sin(aorta_angle + 0.35))) ** 2
        + (xx - cx - np.float32(spine_d * np.cos(aorta_angle + 0.35))) ** 2
    ) < rng.uniform(14.0, 19.0)
    vessels = np.zeros(shape3, dtype=bool)
    for _ in range(int(rng.integers(4, 10))):
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(45.0, 110.0)
        vy, vx = dist * np.sin(angle) + rng.normal(0, 2.0, s_count), dist * np.cos(angle) + rng.normal(0, 2.0, s_count)
        vy3, vx3 = vy.astype(np.float32)[:, None, None], vx.astype(np.float32)[:, None, None]
        vessels |= np.sqrt((yy - cy - vy3) ** 2 + (xx - cx - vx3) ** 2) < rng.uniform(2.0, 5.0)
    peri_fat_field = gaussian_field(rng, shape3, (1.0, 1.5 * px_per_10mm, 1.5 * px_per_10mm))
    peri_fat_threshold = rng.uniform(0.3, 1.0)

    levels = {
        "tissue": rng.uniform(0.3, 0.42),
        "fat": rng.uniform(0.75, 1.0),
        "muscle": rng.uniform(0.22, 0.32),
        "lung": rng.uniform(0.02, 0.08),
        "liver": rng.uniform(0.3, 0.45),
        "aorta": rng.uniform(0.75, 1.05),
        "spine": rng.uniform(0.4, 0.55),
        "vessel": rng.uniform(0.7, 1.1),
        "lv": rng.uniform(0.75, 0.95),
        "rv": rng.uniform(0.7, 0.95),
        "myo": rng.uniform(0.18, 0.3),
    }
    flow = 1.0 + 0.06 * gaussian_field(rng, shape3, (0.8, 3.0, 3.0))
    bias = polynomial_bias(rng, (1, height, width), rng.uniform(0.25, 0.45))
    coil_angle = rng.uniform(-2.6, -0.5)  # a surface coil on the anterior chest wall
    coil_y = body_center[0] + body_a * np.sin(coil_angle)
    coil_x = body_center[1] + body_b * np.cos(coil_angle)
    coil = 1.0 + rng.uniform(0.3, 0.9) * np.exp(-np.sqrt((yy - coil_y) ** 2 + (xx - coil_x) ** 2) / (0.18 * fov))
    noise_sigma = rng.uniform(0.015, 0.035)
    raw_max = rng.uniform(300.0, 900.0)
    return _Scene(
        body=body,
        fat_layer=fat_layer,
        muscle_layer=muscle_layer,
        inner=inner,
        texture=texture,
        compartments=compartments,
        lungs=lungs,
        liver=liver,
        aorta=aorta,
        spine=spine,
        vessels=vessels,
        peri_fat_field=peri_fat_field,
        peri_fat_threshold=peri_fat_threshold,
        levels=levels,
        flow=flow,
        bias=bias,
        coil=coil,
        noise_sigma=noise_sigma,
        raw_max=raw_max,
    )


def _acdc_frame_masks(heart: _Heart, phase: int) -> _FrameMasks:
    """Ventricles, myocardium, papillary muscles and the open base of one phase (0 end-diastole, 1 end-systole)."""
    s_count, shape3, yy, xx, t, cy = heart.s_count, heart.shape3, heart.yy, heart.xx, heart.t, heart.cy
    cx, rho, theta, theta_rv, endo_shape = heart.cx, heart.rho, heart.theta, heart.theta_rv, heart.endo_shape
    epi_shape, rv_shape, r_endo_ed, r_epi_ed = heart.epi_shape, heart.rv_shape, heart.r_endo_ed, heart.r_epi_ed
    contraction, rv_contraction, rv_wall = heart.contraction, heart.rv_contraction, heart.rv_wall
    rv_profile, papillary, open_base = heart.rv_profile, heart.papillary, heart.open_base
    atrium_angle, atrium_r, rv_offset = heart.atrium_angle, heart.atrium_r, heart.rv_offset
    rv_radial, rv_tangential, gap_angle = heart.rv_radial, heart.rv_tangential, heart.gap_angle
    gap_width = heart.gap_width
    if phase == 0:
        r_endo, r_epi, rv_scale = r_endo_ed, r_epi_ed, 1.0
    else:
        r_endo = r_endo_ed * contraction
        r_epi = np.sqrt(r_endo**2 + r_epi_ed**2 - r_endo_ed**2)
        rv_scale = rv_contraction
    r_endo3 = (r_endo[:, None, None] * endo_shape).astype(np.float32)
    r_epi3 = (r_epi[:, None, None] * epi_shape).astype(np.float32)
    lv = rho < r_endo3
    epi = rho < r_epi3
    myo = epi & ~lv

    # right ventricle: an ellipse off the septum, minus the left ventricle's epicardium
    r_epi_slice = np.maximum(r_epi, 1e-3)[:, None, None]
    offset = rv_offset * r_epi_slice
    ry = cy + (offset * np.sin(theta_rv)).astype(np.float32)
    rx = cx + (offset * np.cos(theta_rv)).astype(np.float32)
    u = (yy - ry) * np.float32(np.sin(theta_rv)) + (xx - rx) * np.float32(np.cos(theta_rv))
    v = -(yy - ry) * np.float32(np.cos(theta_rv)) + (xx - rx) * np.float32(np.sin(theta_rv))
    a_rad = (rv_radial * r_epi_slice * rv_scale * rv_profile[:, None, None] + 1e-3).astype(np.float32)
    a_tan = (rv_tangential * r_epi_slice * rv_profile[:, None, None] + 1e-3).astype(np.float32)
    rv_q = np.sqrt((u / a_rad) ** 2 + (v / a_tan) ** 2) / rv_shape
    rv = (rv_q < 1.0) & ~epi & (rv_profile[:, None, None] > 0.15)
    rv_free_wall = (rv_q < 1.0 + rv_wall / np.maximum(a_rad, 1.0)) & ~rv & ~epi & (rv_profile[:, None, None] > 0.15)

    # papillary muscles: dark blobs inside the cavity, labelled as cavity
    papillary_mask = np.zeros(shape3, dtype=bool)
    mid = ((t > 0.25) & (t < 0.8))[:, None, None]
    for angle, radius in papillary:
        d = (r_endo3 - radius * 1.1)
        py, px = cy + d * np.float32(np.sin(angle)), cx + d * np.float32(np.cos(angle))
        papillary_mask |= (np.sqrt((yy - py) ** 2 + (xx - px) ** 2) < radius) & lv & mid

    # base: the ring opens towards the outflow tract and an unlabeled atrium appears
    unlabeled_blood = np.zeros(shape3, dtype=bool)
    if open_base:
        delta = np.angle(np.exp(1j * (theta - gap_angle)))
        gap = myo & (np.abs(delta) < gap_width / 2) & (np.arange(s_count) == 0)[:, None, None]
        myo = myo & ~gap
        unlabeled_blood |= gap
        d = r_epi_ed[0] + atrium_r * 0.7
        ay, ax = cy + np.float32(d * np.sin(atrium_angle)), cx + np.float32(d * np.cos(atrium_angle))
        atrium = np.sqrt((yy - ay) ** 2 + (xx - ax) ** 2) < atrium_r
        unlabeled_blood |= atrium & ~epi & ~rv & ~rv_free_wall & (np.arange(s_count) == 0)[:, None, None]

    label = np.zeros(shape3, dtype=np.uint8)
    label[rv] = 1
    label[myo] = 2
    label[lv] = 3

    return _FrameMasks(
        epi=epi,
        rv=rv,
        rv_free_wall=rv_free_wall,
        papillary_mask=papillary_mask,
        unlabeled_blood=unlabeled_blood,
        label=label,
    )


def _acdc_frame_image(
    heart: _Heart, scene: _Scene, masks: _FrameMasks, frame_rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one frame; returns ``(image scaled to [0, 1], label, raw int16 image)``."""
    shape3, pixel = heart.shape3, heart.pixel
    body, fat_layer, muscle_layer, inner = scene.body, scene.fat_layer, scene.muscle_layer, scene.inner
    texture, compartments, lungs, liver = scene.texture, scene.compartments, scene.lungs, scene.liver
    aorta, spine, vessels, peri_fat_field = scene.aorta, scene.spine, scene.vessels, scene.peri_fat_field
    peri_fat_threshold, levels, flow, bias = scene.peri_fat_threshold, scene.levels, scene.flow, scene.bias
    coil, noise_sigma, raw_max = scene.coil, scene.noise_sigma, scene.raw_max
    epi, rv, rv_free_wall, papillary_mask = masks.epi, masks.rv, masks.rv_free_wall, masks.papillary_mask
    unlabeled_blood, label = masks.unlabeled_blood, masks.label
    heart_mask = epi | rv | rv_free_wall | unlabeled_blood
    envelope = ndimage.binary_dilation(
        heart_mask, structure=np.ones((1, 3, 3), bool), iterations=max(1, int(round(4.0 / pixel)))
    )
    peri_fat = envelope & ~heart_mask & (peri_fat_field > peri_fat_threshold)

    image = np.full(shape3, np.float32(0.0))
    soft_tissue = (
        np.float32(levels["muscle"])
        + np.float32(levels["tissue"] - levels["muscle"] + 0.08) * compartments
        + np.float32(0.07) * texture
    )
    image = np.where(inner, soft_tissue, image)
    image = np.where(liver, np.float32(levels["liver"]) + np.float32(0.05) * texture, image)
    image = np.where(lungs & ~envelope, np.float32(levels["lung"]) + np.float32(0.02) * texture, image)
    image = np.where(muscle_layer, np.float32(levels["muscle"]) + np.float32(0.06) * texture, image)
    image = np.where(fat_layer, np.float32(levels["fat"]) + np.float32(0.08) * texture, image)
    image = np.where(spine & ~envelope, np.float32(levels["spine"]) + np.float32(0.06) * texture, image)
    image = np.where(aorta & ~envelope, np.float32(levels["aorta"]) * flow, image)
    image = np.where(vessels & body & ~envelope, np.float32(levels["vessel"]), image)
    image = np.where(peri_fat & body, np.float32(0.8 * levels["fat"]) + np.float32(0.06) * texture, image)
    image = np.where(rv_free_wall, np.float32(levels["myo"]) + np.float32(0.04) * texture, image)
    image = np.where(unlabeled_blood, np.float32(levels["lv"]) * flow, image)
    image = np.where(label == 1, np.float32(levels["rv"]) * flow, image)
    image = np.where(label == 2, np.float32(levels["myo"]) + np.float32(0.04) * texture, image)
    image = np.where(label == 3, np.float32(levels["lv"]) * flow, image)
    image = np.where(papillary_mask, np.float32(levels["myo"]) * np.float32(1.2), image).astype(np.float32)
    image = ndimage.gaussian_filter(image, sigma=(0.0, 0.7, 0.7))
    image *= (bias * coil).astype(np.float32)
    image = rician(frame_rng, image, noise_sigma)
    raw = np.rint(image / max(float(image.max()), 1e-6) * raw_max).astype(np.int16)
    lo, hi = float(raw.min()), float(raw.max())
    scaled = ((raw.astype(np.float64) - lo) / max(hi - lo, 1.0)).astype(np.float32)
    return scaled, masks.label, raw


def _acdc_patient(
    rng: np.random.Generator, num_slices: int, size: Sequence[int]
) -> dict[str, Any]:
    """Generate both frames (end-diastole, end-systole) of one ACDC-like patient.

    Returns:
        dict with ``frames`` (two ``(image01, label, raw_int16)`` tuples, ``(S, H, W)``), ``pixel_mm`` (in-plane
        spacing), ``es_frame`` (challenge frame number of the second frame) and ``num_frames``.
    """
    heart = _acdc_heart(rng, num_slices, size)
    scene = _acdc_scene(rng, heart)
    frame_seeds = rng.integers(0, 2**63 - 1, size=2)
    frames = []
    for phase in range(2):
        frame_rng = np.random.default_rng(int(frame_seeds[phase]))
        frames.append(_acdc_frame_image(heart, scene, _acdc_frame_masks(heart, phase), frame_rng))
    return {
        "frames": frames,
        "pixel_mm": float(heart.pixel),
        "es_frame": int(rng.integers(8, 17)),
        "num_frames": int(rng.integers(20, 31)),
    }


def make_acdc_patient(
    rng_or_seed: SeedLike, num_slices: int = 10, size: int | Sequence[int] = (192, 192)
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Generate the end-diastolic and end-systolic stacks of one ACDC-like patient (same anatomy, two phases).

    Args:
        rng_or_seed: a numpy Generator (advanced in place) or a seed.
        num_slices: number of short-axis slices (at least 3), base first.
        size: in-plane ``(height, width)`` in pixels (or one int for square slices), each at least 32.

    Returns:
        ``[(image_ed, label_ed), (image_es, label_es)]``: images ``float32`` in ``[0, 1]``, labels ``uint8`` with
        0 background, 1 right ventricle, 2 myocardium, 3 left ventricle, all of shape ``(num_slices, H, W)``.

    Raises:
        ValueError: if ``num_slices`` or ``size`` is invalid.
        TypeError: if ``rng_or_seed`` is neither a seed nor a Generator.
    """
    hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(size)
    patient = _acdc_patient(as_generator(rng_or_seed), num_slices, hw)
    return [(image, label) for image, label, _ in patient["frames"]]


def make_acdc_case(
    rng_or_seed: SeedLike, num_slices: int = 10, size: int | Sequence[int] = (192, 192), phase: str = "ED"
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one ACDC-like short-axis cine-MRI stack.

    Args:
        rng_or_seed: a numpy Generator (advanced in place) or a seed; the same seed gives identical arrays.
        num_slices: number of short-axis slices (at least 3), the base first, the apex last.
        size: in-plane ``(height, width)`` in pixels (or one int for square slices), each at least 32.
        phase: ``"ED"`` (end-diastole) or ``"ES"`` (end-systole) of the same generated patient.

    Returns:
        ``(image, label)`` of shape ``(num_slices, H, W)``: ``image`` ``float32`` min-max scaled to ``[0, 1]``,
        ``label`` ``uint8`` with 0 background, 1 right ventricle, 2 myocardium, 3 left ventricle.

    Raises:
        ValueError: if ``num_slices``, ``size`` or ``phase`` is invalid.
        TypeError: if ``rng_or_seed`` is neither a seed nor a Generator.
    """
    phases = {"ED": 0, "ES": 1}
    if phase not in phases:
        raise ValueError(f"phase: expected 'ED' or 'ES', found {phase!r}.")
    return make_acdc_patient(rng_or_seed, num_slices, size)[phases[phase]]


def _acdc_patient_numbers(seed: int, count: int) -> list[int]:
    """``count`` distinct patient numbers in a shuffled order, like the benchmark's lists."""
    rng = stream(seed, _STREAM_ACDC_IDS)
    pool = max(100, count)
    return [int(p) + 1 for p in rng.permutation(pool)[:count]]


def write_acdc_dataset(
    out_dir: str | Path,
    num_train_patients: int = 14,
    num_val_patients: int = 4,
    labeled_patients: int | Sequence[int] = (1, 3),
    seed: int = 0,
    size: int | Sequence[int] | Sequence[Sequence[int]] = (192, 192),
    num_slices: int | Sequence[int] = (6, 12),
    nifti: bool = True,
) -> Path:
    """Write a synthetic dataset in the ACDC benchmark's HDF5 layout (and optionally the raw challenge layout).

    Layout under ``out_dir``:

    - ``volumes/patientNNN_frame01.h5`` (end-diastole) and ``volumes/patientNNN_frame02.h5`` (end-systole) with
      datasets ``image`` (``float32`` in ``[0, 1]``, ``(S, H, W)``, slices first) and ``label`` (``uint8`` 0-3).
    - ``train.list`` / ``val.list``: ``patientNNN_frame01`` and ``patientNNN_frame02`` per patient, patients in a
      shuffled order; ``train_<N>_label.list``: both frames of the first N patients of ``train.list``, sorted by
      name as in the benchmark.
    - with ``nifti``: the challenge layout ``raw/patientNNN/patientNNN_frameMM.nii.gz`` and
      ``..._frameMM_gt.nii.gz`` (``frame01`` end-diastole, a later frame number end-systole, listed in
      ``raw/patientNNN/Info.cfg``), arrays ``(x, y, z)`` = ``(W, H, S)`` with the slice axis last, unnormalised
      ``int16`` intensities, an RAS affine with in-plane spacing ``FOV / H`` and 10 mm between slices;
      ``raw/train.list``, ``raw/val.list`` and ``raw/train_<N>_label.list`` naming those files;
      ``raw/datalist_<N>_label.json`` per labeled count and ``raw/datalist.json`` (the largest count), MONAI
      datalists in ``train.list`` order with a ``label`` for the labeled patients' volumes only; paths relative to
      the JSON file.

    Args:
        out_dir: output folder (created; existing files of the same names are overwritten).
        num_train_patients: number of training patients (two volumes each).
        num_val_patients: number of validation patients.
        labeled_patients: labeled patient count(s) N for ``train_<N>_label.list``, each in
            ``1..num_train_patients``.
        seed: dataset seed.
        size: ``(H, W)`` of every patient (or one int), or a pair ``((H0, W0), (H1, W1))`` to draw each patient's
            size in that inclusive range.
        num_slices: slices per patient, or an inclusive ``(min, max)`` range drawn per patient.
        nifti: also write the raw NIfTI layout and MONAI datalists.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ValueError: if a count, size or slice number is invalid.
    """
    check_counts(num_train_patients=num_train_patients, num_val_patients=num_val_patients)
    if num_train_patients + num_val_patients == 0:
        raise ValueError("num_train_patients, num_val_patients: expected at least one patient in total, found 0.")
    labeled_counts = (
        checked_labeled_counts("labeled_patients", labeled_patients, num_train_patients) if num_train_patients else []
    )
    low, high = shape_range("size", size, 2, 32)
    if isinstance(num_slices, (int, np.integer)):
        slices_low = slices_high = int(num_slices)
    else:
        bounds = [int(v) for v in num_slices]
        if len(bounds) != 2 or bounds[0] > bounds[1]:
            raise ValueError(f"num_slices: expected an int or an inclusive (min, max) pair, found {num_slices!r}.")
        slices_low, slices_high = bounds
    if slices_low < 3:
        raise ValueError(f"num_slices: expected at least 3 slices, found {num_slices!r}.")

    out = Path(out_dir)
    (out / "volumes").mkdir(parents=True, exist_ok=True)
    numbers = _acdc_patient_numbers(seed, num_train_patients + num_val_patients)
    train_patients, val_patients = numbers[:num_train_patients], numbers[num_train_patients:]

    def frames_of(patients: Sequence[int]) -> list[str]:
        return [f"patient{p:03d}_frame{f:02d}" for p in patients for f in (1, 2)]

    lists = {"train.list": frames_of(train_patients), "val.list": frames_of(val_patients)}
    lists.update({f"train_{n}_label.list": sorted(frames_of(train_patients[:n])) for n in labeled_counts})
    raw_names: dict[str, str] = {}
    for number in numbers:
        rng = stream(seed, _STREAM_ACDC_PATIENT, number)
        hw = draw_shape(rng, low, high)
        s_count = int(rng.integers(slices_low, slices_high + 1))
        patient = _acdc_patient(rng, s_count, hw)
        name = f"patient{number:03d}"
        frame_numbers = (1, patient["es_frame"])
        for k, (image, label, _) in enumerate(patient["frames"]):
            write_h5(out / "volumes" / f"{name}_frame{k + 1:02d}.h5", image, label)
            raw_names[f"{name}_frame{k + 1:02d}"] = f"{name}/{name}_frame{frame_numbers[k]:02d}"
        if nifti:
            pixel = patient["pixel_mm"]
            affine = np.diag([pixel, pixel, ACDC_SLICE_SPACING_MM, 1.0])
            origin_x = -hw[1] * pixel / 2 + rng.uniform(-30, 30)
            origin_y = -hw[0] * pixel / 2 + rng.uniform(-30, 30)
            affine[:3, 3] = np.round([origin_x, origin_y, rng.uniform(-80, 20)], 3)
            patient_dir = out / "raw" / name
            for k, (_, label, raw) in enumerate(patient["frames"]):
                stem = f"{name}_frame{frame_numbers[k]:02d}"
                write_nifti(patient_dir / f"{stem}.nii.gz", np.ascontiguousarray(raw.transpose(2, 1, 0)), affine)
                write_nifti(patient_dir / f"{stem}_gt.nii.gz", np.ascontiguousarray(label.transpose(2, 1, 0)), affine)
            (patient_dir / "Info.cfg").write_text(
                f"ED: 1\nES: {patient['es_frame']}\nGroup: NOR\n"
                f"Height: {rng.uniform(155.0, 195.0):.1f}\nNbFrame: {patient['num_frames']}\n"
                f"Weight: {rng.uniform(55.0, 100.0):.1f}\n"
            )

    for list_name, names in lists.items():
        write_list(out / list_name, names)
        if nifti:
            raw_list = [raw_names[v].split("/")[1] for v in names]
            write_list(out / "raw" / list_name, sorted(raw_list) if "_label" in list_name else raw_list)
    if nifti:
        labels = {"0": "background", "1": "right ventricle", "2": "myocardium", "3": "left ventricle"}

        def entry(volume: str, with_label: bool) -> dict[str, str]:
            item = {"image": f"{raw_names[volume]}.nii.gz"}
            if with_label:
                item["label"] = f"{raw_names[volume]}_gt.nii.gz"
            return item

        def entries(n: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
            labeled = set(frames_of(train_patients[:n]))
            training = [entry(v, v in labeled) for v in lists["train.list"]]
            return training, [entry(v, True) for v in lists["val.list"]]

        write_datalists(
            out / "raw", "synthetic ACDC (short-axis cine-MRI-like)", labels, "numLabeledPatients", labeled_counts,
            entries,
        )
    return out
