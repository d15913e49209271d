"""The quality dashboard's plots as inline SVG, drawn on the server: no JavaScript, no network
assets. `training/charts.py` draws the training curves the same way; annotation may not import
training (see ARCHITECTURE.md), hence this module. Marks carry a class (`bar`, `point`,
`series`) and a <title> with their value, so a hover shows it and a test can count them.
"""

from collections.abc import Sequence
from html import escape

COLOUR = "#2563eb"
WARN = "#dc2626"
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 12, 24, 40


def _frame(title: str, width: int, height: int) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        'font-family="sans-serif" font-size="11" class="chart">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="{PAD_LEFT}" y="15" font-weight="bold">{escape(title)}</text>',
    ]


def _empty(parts: list[str], width: int, height: int) -> str:
    parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data yet</text>')
    parts.append("</svg>")
    return "".join(parts)


def _axes(parts: list[str], width: int, height: int, labels: tuple[str, str, str, str]) -> None:
    """Axis lines and their end labels: (y max, y min, x min, x max)."""
    bottom, right = height - PAD_BOTTOM, width - PAD_RIGHT
    y_max, y_min, x_min, x_max = (escape(label) for label in labels)
    parts.append(
        f'<path d="M{PAD_LEFT},{PAD_TOP} V{bottom} H{right}" stroke="#999" fill="none"/>'
        f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + 4}" text-anchor="end">{y_max}</text>'
        f'<text x="{PAD_LEFT - 4}" y="{bottom}" text-anchor="end">{y_min}</text>'
        f'<text x="{PAD_LEFT}" y="{bottom + 14}">{x_min}</text>'
        f'<text x="{right}" y="{bottom + 14}" text-anchor="end">{x_max}</text>'
    )


def bar_chart_svg(
    bars: Sequence[tuple[str, float]],
    *,
    title: str,
    highlight_below: int = 0,
    width: int = 560,
    height: int = 220,
) -> str:
    """One bar per (label, value), left to right; the first `highlight_below` bars in red."""
    parts = _frame(title, width, height)
    if not bars or not any(value for _, value in bars):
        return _empty(parts, width, height)
    top = max(value for _, value in bars)
    inner_w, inner_h = width - PAD_LEFT - PAD_RIGHT, height - PAD_TOP - PAD_BOTTOM
    step = inner_w / len(bars)
    # A few bars are named one by one; many get the range at the ends of the axis.
    named = len(bars) <= 6
    ends = ("", "") if named else (bars[0][0], bars[-1][0])
    _axes(parts, width, height, (f"{top:.3g}", "0", *ends))
    for index, (label, value) in enumerate(bars):
        bar_h = value / top * inner_h
        x = PAD_LEFT + index * step + 1
        y = PAD_TOP + inner_h - bar_h
        colour = WARN if index < highlight_below else COLOUR
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{bar_h:.1f}" fill="{colour}"><title>{escape(label)}: {value:g}</title>'
            "</rect>"
        )
        if named:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{height - PAD_BOTTOM + 14}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def line_chart_svg(
    points: Sequence[tuple[float, float]],
    *,
    title: str,
    x_labels: tuple[str, str] = ("", ""),
    width: int = 560,
    height: int = 220,
) -> str:
    """One line through (x, y) points in x order, from a y axis at 0."""
    parts = _frame(title, width, height)
    if not points:
        return _empty(parts, width, height)
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x_min, x_max = min(xs), max(xs)
    y_max = max(ys) or 1.0
    if x_max == x_min:
        x_max = x_min + 1
    inner_w, inner_h = width - PAD_LEFT - PAD_RIGHT, height - PAD_TOP - PAD_BOTTOM
    _axes(parts, width, height, (f"{y_max:.3g}", "0", *x_labels))

    def at(x: float, y: float) -> str:
        sx = PAD_LEFT + (x - x_min) / (x_max - x_min) * inner_w
        sy = PAD_TOP + (1 - y / y_max) * inner_h
        return f"{sx:.1f},{sy:.1f}"

    coords = " ".join(at(x, y) for x, y in points)
    parts.append(
        f'<polyline class="series" points="{coords}" fill="none" stroke="{COLOUR}" '
        'stroke-width="2"/>'
    )
    for x, y in points:
        cx, cy = at(x, y).split(",")
        parts.append(
            f'<circle class="point" cx="{cx}" cy="{cy}" r="2.5" fill="{COLOUR}">'
            f"<title>{y:g}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def scatter_svg(
    points: Sequence[tuple[float, float, str]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_range: tuple[float, float] = (-1.0, 1.0),
    y_range: tuple[float, float] = (-1.0, 1.0),
    width: int = 560,
    height: int = 260,
) -> str:
    """Labelled points (x, y, label) on fixed ranges, such as two taus in [-1, 1]."""
    parts = _frame(title, width, height)
    if not points:
        return _empty(parts, width, height)
    (x_lo, x_hi), (y_lo, y_hi) = x_range, y_range
    inner_w, inner_h = width - PAD_LEFT - PAD_RIGHT, height - PAD_TOP - PAD_BOTTOM
    _axes(parts, width, height, (f"{y_hi:g}", f"{y_lo:g}", f"{x_lo:g}", f"{x_hi:g}"))
    bottom = height - PAD_BOTTOM
    parts.append(
        f'<text x="{PAD_LEFT + inner_w / 2}" y="{bottom + 28}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text x="12" y="{PAD_TOP + inner_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {PAD_TOP + inner_h / 2})">{escape(y_label)}</text>'
    )
    for x, y, label in points:
        cx = PAD_LEFT + (min(max(x, x_lo), x_hi) - x_lo) / (x_hi - x_lo) * inner_w
        cy = PAD_TOP + (1 - (min(max(y, y_lo), y_hi) - y_lo) / (y_hi - y_lo)) * inner_h
        parts.append(
            f'<circle class="point" cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{COLOUR}" '
            f'fill-opacity="0.7"><title>{escape(label)}: {x:.2f}, {y:.2f}</title></circle>'
            + (
                f'<text x="{cx - 7:.1f}" y="{cy + 4:.1f}" text-anchor="end">{escape(label)}</text>'
                if cx > PAD_LEFT + inner_w * 0.7
                else f'<text x="{cx + 7:.1f}" y="{cy + 4:.1f}">{escape(label)}</text>'
            )
        )
    parts.append("</svg>")
    return "".join(parts)
