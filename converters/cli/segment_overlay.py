"""The overlay of ``pslg segment``: every mask tinted and outlined on the image, with its box, points and index."""

from __future__ import annotations

from typing import Any, Sequence

#: Overlay colours (RGB), one per prompt, cycled; chosen to stay distinguishable on green/grey aerial scenes.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 64, 160),
    (0, 200, 255),
    (255, 200, 0),
    (160, 80, 255),
    (255, 110, 30),
    (0, 255, 160),
    (255, 255, 255),
    (60, 120, 255),
)
POSITIVE = (40, 230, 60)
NEGATIVE = (240, 40, 40)


def render_overlay(image, results: Sequence[Any], user_points: Sequence[int]):
    """The image with every mask tinted and outlined, its box, its points, and its index.

    Positive points are green discs, negative ones red crosses; a point the CFPG added (beyond the
    ``user_points[i]`` the user gave) is a green diamond, so a reviewer sees what the method chose.
    """
    import cv2
    import numpy as np

    canvas = image.astype(np.float32).copy()
    h, w = image.shape[:2]
    side = min(h, w)
    thick = max(1, round(side / 700))  # thin lines: aerial objects are often 10–30 pixels long
    radius = max(2, round(side / 260))
    font = min(1.0, max(0.35, side / 1800))
    for i, r in enumerate(results):
        if r.mask is not None and r.mask.any():
            colour = np.array(PALETTE[i % len(PALETTE)], np.float32)
            canvas[r.mask] = canvas[r.mask] * 0.5 + colour * 0.5
    out = np.clip(canvas, 0, 255).astype(np.uint8)
    for i, r in enumerate(results):
        colour = PALETTE[i % len(PALETTE)]
        if r.mask is not None and r.mask.any():
            contours, _ = cv2.findContours(r.mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, colour, thick, cv2.LINE_AA)
        if r.box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in r.box)
            cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, thick, cv2.LINE_AA)
            if len(results) > 1:
                label = str(i)
                (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, 1)
                # above the box's top-left corner, or below the box when there is no room above
                ty = y0 - base - 1 if y0 - th - base - 2 >= 0 else min(h - base - 1, y1 + th + 2)
                cv2.rectangle(out, (x0, ty - th - 1), (x0 + tw + 2, ty + base), colour, -1)
                cv2.putText(out, label, (x0 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), 1, cv2.LINE_AA)
        for j, ((px, py), lab) in enumerate(zip(r.points, r.point_labels)):
            c = (int(round(px)), int(round(py)))
            if lab == 1 and j >= user_points[i]:  # added by CFPG
                d = radius + 1
                pts = np.array([[c[0], c[1] - d], [c[0] + d, c[1]], [c[0], c[1] + d], [c[0] - d, c[1]]], np.int32)
                cv2.fillPoly(out, [pts], POSITIVE, cv2.LINE_AA)
                cv2.polylines(out, [pts], True, (0, 0, 0), 1, cv2.LINE_AA)
            elif lab == 1:
                cv2.circle(out, c, radius, POSITIVE, -1, cv2.LINE_AA)
                cv2.circle(out, c, radius, (0, 0, 0), 1, cv2.LINE_AA)
            else:
                cv2.line(out, (c[0] - radius, c[1] - radius), (c[0] + radius, c[1] + radius), NEGATIVE, thick + 1, cv2.LINE_AA)
                cv2.line(out, (c[0] - radius, c[1] + radius), (c[0] + radius, c[1] - radius), NEGATIVE, thick + 1, cv2.LINE_AA)
    return out
