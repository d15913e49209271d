"""Line charts as inline SVG, drawn on the server: no JavaScript, no network assets, and the
page passes a strict Content-Security-Policy."""

from collections.abc import Mapping, Sequence
from html import escape

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c"]


def line_chart_svg(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str = "",
    width: int = 560,
    height: int = 220,
) -> str:
    """An SVG with one polyline per named series of (x, y) points, axes labelled with the
    ranges. Series with no points are left out; with none at all the chart says so."""
    drawn = {name: points for name, points in series.items() if points}
    pad_left, pad_right, pad_top, pad_bottom = 48, 12, 24 if title else 10, 36
    inner_w, inner_h = width - pad_left - pad_right, height - pad_top - pad_bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title or "chart")}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
    ]
    if title:
        parts.append(f'<text x="{pad_left}" y="15" font-weight="bold">{escape(title)}</text>')
    if not drawn:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data yet</text>'
        )
        parts.append("</svg>")
        return "".join(parts)

    xs = [x for points in drawn.values() for x, _ in points]
    ys = [y for points in drawn.values() for _, y in points]
    x_min, x_max = min(xs), max(xs)
    y_min, y_max = min(ys), max(ys)
    if x_max == x_min:
        x_max = x_min + 1
    if y_max == y_min:
        y_min, y_max = y_min - 0.5, y_max + 0.5

    def sx(x: float) -> float:
        return pad_left + (x - x_min) / (x_max - x_min) * inner_w

    def sy(y: float) -> float:
        return pad_top + (1 - (y - y_min) / (y_max - y_min)) * inner_h

    bottom, right = pad_top + inner_h, pad_left + inner_w
    parts.append(
        f'<path d="M{pad_left},{pad_top} V{bottom} H{right}" stroke="#999" fill="none"/>'
        f'<text x="{pad_left - 4}" y="{pad_top + 4}" text-anchor="end">{y_max:.3g}</text>'
        f'<text x="{pad_left - 4}" y="{bottom}" text-anchor="end">{y_min:.3g}</text>'
        f'<text x="{pad_left}" y="{bottom + 14}">{x_min:.3g}</text>'
        f'<text x="{right}" y="{bottom + 14}" text-anchor="end">{x_max:.3g}</text>'
    )
    for index, (name, points) in enumerate(drawn.items()):
        colour = PALETTE[index % len(PALETTE)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
        )
        legend_x = pad_left + index * 140
        parts.append(
            f'<rect x="{legend_x}" y="{height - 12}" width="10" height="3" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="{height - 8}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def metric_series(
    rows: Sequence[Mapping[str, object]], key: str, x_key: str = "step"
) -> list[tuple[float, float]]:
    """(step, value) points for `key` from metric rows that carry it as a number."""
    points = []
    for row in rows:
        x, y = row.get(x_key), row.get(key)
        if isinstance(x, int | float) and isinstance(y, int | float) and not isinstance(y, bool):
            points.append((float(x), float(y)))
    return points
