"""report.html: the report as one self-contained page (tables as HTML, figures embedded as
base64 PNG, no script and no link to fetch), readable offline and inside the MLflow UI.

The figures answer the study's question from the runs' own tables: Net Gain (and Fusion
Gain) against |yaw| per configuration with the 95% CI of each bin and the break-even yaw,
the distribution of the per-item paired differences, flip false vs true side by side, and a
few sample triplets.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from frontal_exp.metrics.pose_bins import break_even

if TYPE_CHECKING:
    from frontal_exp.report import Report, ReportData

GAINS = {"net_gain": "Net Gain", "fusion_gain": "Fusion Gain"}


@dataclass
class ReportFigure:
    """One figure of the report: file name stem, title, one-line caption, PNG bytes, and the
    report section it follows."""

    name: str
    title: str
    caption: str
    png: bytes
    after: str


# -- the figures -----------------------------------------------------------------------
def colours_for(names: list[str]) -> dict[str, tuple]:
    """One colour per configuration, the same in every figure (tab10, then tab20b/c)."""
    from matplotlib import colormaps

    palette = [*colormaps["tab10"].colors, *colormaps["tab20b"].colors, *colormaps["tab20c"].colors]
    return {name: palette[k % len(palette)] for k, name in enumerate(names)}


def _shown(table: pd.DataFrame, gain: str) -> pd.DataFrame:
    """The bins of a by-pose table that have a gain to draw (items, edges, a value)."""
    if gain not in table:
        return table.iloc[:0]
    return table[(table.n > 0) & table.lo.notna() & table[gain].notna()]


def _edges(tables: dict[str, pd.DataFrame]) -> list[float]:
    rows = pd.concat([t[t.lo.notna()] for t in tables.values()])
    return sorted({*rows.lo.astype(float), *rows.hi.astype(float)})


def draw_gain(ax, tables: dict[str, pd.DataFrame], gain: str, axis: str, colours: dict[str, tuple]) -> bool:
    """One line per table (a configuration): the gain per |axis| bin at the bin's centre with
    its 95% CI band, a dashed vertical line at its break-even angle (said in the legend, also
    when there is none) and the zero line. Lines are shifted a little sideways so markers of
    different configurations do not hide each other. False when no table has the gain."""
    shown = {k: s for k, t in tables.items() if len(s := _shown(t, gain))}
    if not shown:
        return False
    edges = _edges(tables)
    step = 0.06 * float(np.min(np.diff(edges))) if len(edges) > 1 else 0.0
    for k, (name, t) in enumerate(shown.items()):
        x = ((t.lo + t.hi) / 2 + (k - (len(shown) - 1) / 2) * step).to_numpy(float)
        colour = colours[name]
        low, high = t[f"{gain}_ci_low"].to_numpy(float), t[f"{gain}_ci_high"].to_numpy(float)
        ax.fill_between(x, low, high, color=colour, alpha=0.15, lw=0, gid=f"ci {name}")
        # error bars too: a bin between two bins without a CI has no band to show its own
        y = t[gain].to_numpy(float)
        ax.errorbar(x, y, yerr=[np.maximum(y - low, 0), np.maximum(high - y, 0)], fmt="o-", ms=4, lw=1.3,
                    capsize=2, elinewidth=0.8, color=colour, label=f"{name} ({_break_even_text(tables[name], gain, axis)})")
        edge = break_even(tables[name], gain)
        if edge is not None:
            ax.axvline(edge, color=colour, ls="--", lw=1)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(edges)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel(f"|{axis}| (deg)")
    ax.set_ylabel(f"{GAINS[gain]} (95% CI)")
    ax.grid(alpha=0.3)
    return True


def _break_even_text(table: pd.DataFrame, gain: str, axis: str) -> str:
    edge = break_even(table, gain)
    return f"break-even |{axis}| {edge:g} deg" if edge is not None else "no break-even"


def gain_figure(tables: dict[str, pd.DataFrame], gain: str, axis: str, colours: dict[str, tuple]):
    """Gain against |axis| per configuration (see `draw_gain`), legend under the plot; None
    when no configuration has that gain."""
    from frontal_exp.figures import new_plot

    fig, axes = new_plot(1, 1, size=(7.5, 4.2))
    ax = axes[0][0]
    if not draw_gain(ax, tables, gain, axis, colours):
        return None
    ax.set_title(f"{GAINS[gain]} by |{axis}| per configuration", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    return fig


def item_differences(items: pd.DataFrame) -> np.ndarray:
    """Per paired item (status ok, both similarities): frontal_to_gt - angle_to_gt (none
    when the table lacks those columns, e.g. a run logged by other code)."""
    if not {"status", "angle_to_gt", "frontal_to_gt"} <= set(items.columns):
        return np.empty(0)
    ok = items[items.status == "ok"]
    d = pd.to_numeric(ok.frontal_to_gt, errors="coerce") - pd.to_numeric(ok.angle_to_gt, errors="coerce")
    return d.dropna().to_numpy(float)


def paired_difference_figure(items: dict[str, pd.DataFrame], colours: dict[str, tuple]):
    """Per configuration, the per-item paired differences (frontal_to_gt - angle_to_gt): a
    violin, every item as a dot, the mean (= the Net Gain) as a black diamond; N and the mean
    in the configuration's label. None when no configuration has a paired item."""
    from frontal_exp.figures import new_plot

    diffs = {name: d for name, t in items.items() if (d := item_differences(t)).size}
    if not diffs:
        return None
    fig, axes = new_plot(1, 1, size=(7.5, 0.75 * len(diffs) + 1.5))
    ax = axes[0][0]
    rng = np.random.default_rng(0)
    ticks, labels = [], []
    for k, (name, d) in enumerate(diffs.items()):
        y = len(diffs) - 1 - k  # the first configuration on top, as in the tables
        colour = colours[name]
        if d.size >= 2 and np.ptp(d) > 1e-9:  # a violin needs a spread (identity: every difference is 0)
            parts = ax.violinplot([d], positions=[y], widths=0.8, showextrema=False, **_horizontal())
            for body in parts["bodies"]:
                body.set_facecolor(colour)
                body.set_alpha(0.3)
        ax.scatter(d, y + rng.uniform(-0.18, 0.18, d.size), s=9, color=colour, alpha=0.7, lw=0)
        ax.plot([d.mean()], [y], "D", color="black", ms=5)
        ticks.append(y)
        labels.append(f"{name}\nN={d.size}, mean {d.mean():+.4f}")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(ticks, labels=labels, fontsize=7)
    ax.set_ylim(-0.7, len(diffs) - 0.3)
    ax.set_xlabel("per item: cos(Frontal, GT) - cos(Angle, GT)")
    ax.set_title("Paired differences per item (diamond: the mean, i.e. the Net Gain)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return fig


def _horizontal() -> dict:
    """violinplot's horizontal switch: `orientation` from matplotlib 3.10, `vert` before."""
    import inspect

    from matplotlib.axes import Axes

    params = inspect.signature(Axes.violinplot).parameters
    return {"orientation": "horizontal"} if "orientation" in params else {"vert": False}


def flip_figure(pairs: list[tuple[str, str, str]], pose: dict[str, pd.DataFrame], axis: str = "yaw"):
    """One panel per flip pair: Net Gain by |axis| with flip false and with flip true, each
    with its 95% CI band. None when no pair has by-pose tables."""
    from frontal_exp.figures import new_plot

    drawn = [(name, {"flip=false": pose[off], "flip=true": pose[on]}) for name, off, on in pairs
             if off in pose and on in pose]
    if not drawn:
        return None
    cols = min(2, len(drawn))
    rows = -(-len(drawn) // cols)
    fig, axes = new_plot(rows, cols, size=(6.0, 4.2))
    colours = {"flip=false": "tab:blue", "flip=true": "tab:orange"}
    for k, (name, tables) in enumerate(drawn):
        ax = axes[k // cols][k % cols]
        draw_gain(ax, tables, "net_gain", axis, colours)
        ax.set_title(name, fontsize=8)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    for k in range(len(drawn), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    fig.suptitle(f"Net Gain by |{axis}|: flip false vs true", fontsize=10)
    fig.tight_layout()
    return fig


def report_figures(data: ReportData) -> list[ReportFigure]:
    """The report's figures (those its runs have the data for), as PNG bytes."""
    from frontal_exp.figures import plot_to_png

    colours = colours_for(list(dict.fromkeys([*data.pose.get("yaw", {}), *data.items])))
    out = []
    yaw = data.pose.get("yaw", {})
    for gain, name in GAINS.items():
        fig = gain_figure(yaw, gain, "yaw", colours) if yaw else None
        if fig is not None:
            out.append(ReportFigure(
                f"{gain}_by_yaw", f"{name} by |yaw|",
                f"{name} per |yaw| bin of each configuration, shaded: its 95% paired-bootstrap CI (bins of one item "
                "have none); dashed vertical line: the configuration's break-even |yaw|, the lowest bin edge from "
                "which the CI lower bound stays >= 0 (the legend says when there is none).",
                plot_to_png(fig), "by_yaw"))
    fig = paired_difference_figure(data.items, colours)
    if fig is not None:
        out.append(ReportFigure(
            "paired_differences", "Paired differences per item",
            "Each dot is one paired item of a configuration: how much closer (> 0) or farther (< 0) its "
            "frontalized face is to the GT than its angled input.", plot_to_png(fig), "table1_models"))
    fig = flip_figure(data.flip, yaw)
    if fig is not None:
        out.append(ReportFigure(
            "flip_net_gain_by_yaw", "Flip false vs true: Net Gain by |yaw|",
            "Runs that differ only in embedder.flip, one panel each.", plot_to_png(fig), "flip"))
    return out


# -- the page --------------------------------------------------------------------------
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.8em;
       border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #555; font-size: 0.9em; } .explain { color: #444; font-size: 0.9em; margin: 0.3em 0 0.6em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.4em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #444; max-width: 900px; }
code { font-size: 0.9em; } nav a { margin-right: 0.8em; font-size: 0.85em; }
"""

DEDUP_NOTE = ("A row is a configuration: runs are told apart by their config hash (tag "
              "<code>frontal_exp.config_hash</code>, the whole resolved config less settings that cannot change a "
              "number); a configuration run several times shows its latest run, and the older runs are counted "
              "above. Settings that differ between runs of the same protocol, dataset, model, enhancer and "
              "embedder are extra columns.")


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def img_tag(data: bytes, alt: str, mime: str = "image/png") -> str:
    """An <img> carrying its image (data URI): the page needs no other file."""
    return f'<img alt="{_esc(alt)}" src="data:{mime};base64,{base64.b64encode(data).decode("ascii")}">'


def html_table(df: pd.DataFrame) -> str:
    """A table with every value as report.md shows it (floats to 4 decimals)."""
    from frontal_exp.report import cell_text

    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            number = isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
            cells.append(f'<td class="num">{_esc(cell_text(v))}</td>' if number else f"<td>{_esc(cell_text(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>'
            + "\n".join(body) + "</tbody></table></div>")


def _figure_html(fig: ReportFigure) -> str:
    return (f'<figure id="fig-{_esc(fig.name)}">{img_tag(fig.png, fig.title)}'
            f"<figcaption><b>{_esc(fig.title)}.</b> {_esc(fig.caption)}</figcaption></figure>")


def _triplets_html(data: ReportData) -> list[str]:
    if not data.triplets:
        return []
    parts = ['<h2 id="triplets">Sample triplets (Angled | Frontal | GT)</h2>',
             '<p class="explain">The same seeded sample of items in every configuration (its first rows), with '
             "each face's similarity to the GT; downscaled from the runs' <code>figures/triplets.png</code>.</p>"]
    if data.triplets_left_out:
        parts.append(f'<p class="explain">The first {len(data.triplets)} configurations are shown; '
                     f"{data.triplets_left_out} more have triplets in their runs' artifacts.</p>")
    for name, jpeg in data.triplets.items():
        parts.append(f'<figure>{img_tag(jpeg, "triplets " + name, "image/jpeg")}'
                     f"<figcaption>{_esc(name)}</figcaption></figure>")
    return parts


def render_html(report: Report, experiment: str, source: str, figures: list[ReportFigure],
                generated: datetime | None = None) -> str:
    """The page: a header (experiment, date, source, configurations, how rows are
    de-duplicated), then each section with a one-line explanation, its notes, its table and
    the figures drawn from it, and a few sample triplets."""
    from frontal_exp.report import EXPLAIN, SECTIONS

    when = (generated or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    data = report.data
    shown = [(name, title) for name, title in SECTIONS
             if not report.tables.get(name, pd.DataFrame()).empty or report.notes.get(name)
             or any(f.after == name for f in figures)]
    nav = "".join(f'<a href="#{name}">{_esc(title.split(" (")[0])}</a>' for name, title in shown)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Report: {_esc(experiment)}</title><style>{CSS}</style></head><body>",
        f"<h1>Report: {_esc(experiment)}</h1>",
        f'<p class="meta">Generated {when} &middot; source <code>{_esc(source)}</code> &middot; '
        f"{len(data.configurations)} configuration{'s' * (len(data.configurations) != 1)}</p>",
    ]
    if report.notes.get(""):
        parts.append("<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in report.notes[""]) + "</ul>")
    parts.append(f'<p class="explain">{DEDUP_NOTE}</p>')
    if data.configurations:
        parts.append("<details><summary>Configurations</summary><ul>"
                     + "".join(f"<li>{_esc(c)}</li>" for c in data.configurations) + "</ul></details>")
    if data.triplets:
        nav += '<a href="#triplets">Sample triplets</a>'
    parts.append(f"<nav>{nav}</nav>")
    for name, title in shown:
        table = report.tables.get(name, pd.DataFrame())
        parts += [f'<h2 id="{name}">{_esc(title)}</h2>', f'<p class="explain">{_esc(EXPLAIN[name])}</p>']
        if report.notes.get(name):
            parts.append("<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in report.notes[name]) + "</ul>")
        if not table.empty:
            parts.append(html_table(table))
        parts += [_figure_html(f) for f in figures if f.after == name]
        if name == "paired":
            parts += _triplets_html(data)
    if "paired" not in {n for n, _ in shown}:
        parts += _triplets_html(data)
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(report: Report, path: Path, experiment: str, source: str, figures: list[ReportFigure]) -> Path:
    path = Path(path)
    path.write_text(render_html(report, experiment, source, figures), encoding="utf-8")
    return path
