"""Pictures of a search run: Pareto plot (system energy vs accuracy loss) as PNG and interactive HTML, and the best
trial's per-layer energy as a bar chart (PNG and HTML).

``write_plots(summary, points, out_dir) -> list[Path]``: ``summary`` is ``dse.report.summarize(run)``, ``points`` the
trial summaries of every trial that saw the whole search split (``dse.report.plot_points(run)``). PNG through
matplotlib (Agg backend, no display needed), HTML through plotly (a self-contained file, plotly.js inlined). Both are
the optional extra ``plots`` (``pip install 'dse[plots]'``).
"""
from __future__ import annotations

from pathlib import Path

from dse.errors import DseError


def _libs():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import plotly.graph_objects as go
    except ImportError as e:
        raise DseError(f"plots need matplotlib and plotly ({e.name} is missing); pip install 'dse[plots]'") from None
    return plt, go


def _pareto(summary: dict, points: list[dict], out: Path, plt, go) -> list[Path]:
    budget = summary.get("budget_loss")
    front = summary["pareto_front"]
    best = summary["best"]
    groups = {"feasible": [p for p in points if p["feasible"]], "infeasible": [p for p in points if not p["feasible"]]}
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, pts, color in (("feasible", groups["feasible"], "tab:blue"),
                              ("infeasible", groups["infeasible"], "tab:gray")):
        ax.scatter([100 * p["loss"] for p in pts], [p["energy"]["system"] for p in pts], s=14, c=color,
                   alpha=0.6, label=f"{label} trials ({len(pts)})")
    ax.plot([100 * p["loss"] for p in front], [p["energy"]["system"] for p in front], "-o", c="tab:orange", ms=4,
            label="Pareto front")
    if best:
        ax.scatter([100 * best["loss"]], [best["energy"]["system"]], marker="*", s=180, c="tab:red", zorder=5,
                   label=f"best (trial {best['trial']})")
    if budget is not None:
        ax.axvline(100 * budget, ls="--", c="k", lw=1, label=f"budget {100 * budget:.2f} pp")
    ax.set_xlabel("accuracy loss vs FxP8 exact (pp, search split)")
    ax.set_ylabel("system energy relative to all-exact FxP8")
    ax.set_title(f"{Path(summary['run']).name}: energy vs accuracy loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = out / "pareto.png"
    fig.savefig(png)
    plt.close(fig)

    def hover(p):
        layers = ", ".join(f"{n}: {v['multiplier']}{' +cv' if v['cv'] else ''}" for n, v in p["config"].items()
                           if v["multiplier"] != "exact" or v["cv"])
        return f"trial {p['trial']}<br>energy {p['energy']['system']:.4f}<br>loss {100 * p['loss']:.2f} pp<br>" \
               f"{layers or 'all exact'}"

    hf = go.Figure()
    for label, pts, color in (("feasible", groups["feasible"], "royalblue"),
                              ("infeasible", groups["infeasible"], "gray")):
        hf.add_trace(go.Scatter(x=[100 * p["loss"] for p in pts], y=[p["energy"]["system"] for p in pts],
                                mode="markers", name=f"{label} trials", marker={"color": color, "size": 7},
                                text=[hover(p) for p in pts], hoverinfo="text"))
    hf.add_trace(go.Scatter(x=[100 * p["loss"] for p in front], y=[p["energy"]["system"] for p in front],
                            mode="lines+markers", name="Pareto front", text=[hover(p) for p in front],
                            hoverinfo="text", line={"color": "darkorange"}))
    if budget is not None:
        hf.add_vline(x=100 * budget, line_dash="dash", annotation_text=f"budget {100 * budget:.2f} pp")
    hf.update_layout(title=f"{Path(summary['run']).name}: energy vs accuracy loss",
                     xaxis_title="accuracy loss vs FxP8 exact (pp, search split)",
                     yaxis_title="system energy relative to all-exact FxP8")
    html = out / "pareto.html"
    hf.write_html(html, include_plotlyjs=True)
    return [png, html]


def _layers(summary: dict, out: Path, plt, go) -> list[Path]:
    best = summary["best"]
    per = best["energy"]["layers"]
    names = list(per)
    exact = [100 * per[n]["exact"] for n in names]
    config = [100 * per[n]["config"] for n in names]
    labels = [f"{n}\n{best['config'].get(n, {}).get('multiplier', 'exact')}" for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names) + 2), 4.5), dpi=120)
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], exact, width=0.4, label="all exact", color="tab:gray")
    ax.bar([i + 0.2 for i in x], config, width=0.4, label=f"best (trial {best['trial']})", color="tab:blue")
    ax.set_xticks(list(x), labels, rotation=45 if len(names) > 8 else 0, ha="right" if len(names) > 8 else "center",
                  fontsize=7)
    ax.set_ylabel("% of the all-exact network energy")
    ax.set_title("per-layer energy")
    ax.set_ylim(0, 1.18 * max(exact + config))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    fig.tight_layout()
    png = out / "layers.png"
    fig.savefig(png)
    plt.close(fig)
    hf = go.Figure([go.Bar(name="all exact", x=names, y=exact, marker_color="gray"),
                    go.Bar(name=f"best (trial {best['trial']})", x=names, y=config, marker_color="royalblue",
                           text=[best["config"].get(n, {}).get("multiplier", "exact") for n in names])])
    hf.update_layout(barmode="group", title="per-layer energy", yaxis_title="% of the all-exact network energy")
    html = out / "layers.html"
    hf.write_html(html, include_plotlyjs=True)
    return [png, html]


def write_plots(summary: dict, points: list[dict], out_dir) -> list[Path]:
    """Write pareto.png/.html and (when the best trial has a per-layer breakdown) layers.png/.html into out_dir."""
    plt, go = _libs()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DseError(f"plot directory '{out}': cannot create it ({e.strerror}); give a writable directory") from None
    if not points:
        raise DseError(f"run '{summary['run']}' has no trial that saw the whole search split yet; nothing to plot")
    paths = _pareto(summary, points, out, plt, go)
    best = summary["best"]
    if best and best["energy"].get("layers"):
        paths += _layers(summary, out, plt, go)
    return paths
