"""The search's loss predictors (AME and the logit surrogate, dse.predict) on held-out configurations of a budget's
model, measured the way the search uses them.

Run:  python benchmarks/bench_predict.py search_spaces/default.toml [--images 5000] [--near 40] [--uniform 20]
      [--seed 0] [--write-results]

Protocol (one budget file; its model, data, space, energy model and set-up as `dse search` builds them, but on
``--images`` images of the search split instead of the budget's cap, so each measured loss has a small sampling
error, reported as the paired standard error of every loss):

* the search's context (dse.search.context.build_context): FxP8 calibration, the logit and propagated surrogates on
  the first 300 search images and the predictor gate fitted on the set-up's configurations (all-exact + 10 with few
  approximate layers), the knapsack sensitivities (the surrogate's single-layer runs), all of them measured (no
  ``setup_budget_s``: with it, a loaded machine leaves some out and the knapsack's configurations change);
* ``--near`` configurations from the distribution the search visits near the budget: the knapsack's choice at a
  random capacity (0.25-3x the budget) over a random 70 % of the single-layer items; and ``--uniform`` uniform random
  configurations of the space (each searchable layer approximate with probability q ~ U(0, 1));
* every configuration measured on all images (paired loss vs FxP8 exact, standard error);
* near-budget, as trials arrive: each configuration is predicted by each candidate fitted on every point before it
  (the set-up's and the earlier near-budget ones: the search's refit), then added (prequential: every prediction is
  held out); reported over the second half of the stream, when the refit has points near the budget;
* uniform: predicted by each candidate fitted on the set-up's points and all near-budget ones;
* before: the previous protocol (all-exact + 10 random configurations with 20-100 % of the layers approximate, the
  raw surrogate loss alone) on the same held-out sets.
``--write-results`` replaces this budget's row block in the "## Predictor" section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _budget_copy(path: Path, images: int, out: Path) -> Path:
    """The budget with ``[data] images = images`` and ``confirm = 0`` (the search's confirmation images are not
    needed here: every loss is measured on all ``images``; other keys unchanged, relative paths resolved as before)."""
    text = path.read_text()
    for key, value in (("images", images), ("confirm", 0)):
        text, n = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", text)
        if n == 0:
            text = re.sub(r"(?m)^\[data\]\s*$", f"[data]\n{key} = {value}", text, count=1)
    out.write_text(text)
    return out


def near_budget_configs(space, items, budget: float, n: int, rng) -> list[dict]:
    """Knapsack choices at random capacities over random 70 % subsets of the single-layer items."""
    from dse.search import seeds

    out = []
    while len(out) < n:
        sub = {k: [it for it in v if rng.uniform() < 0.7] for k, v in items.items()}
        cfg = seeds.knapsack(sub, budget * rng.uniform(0.25, 3.0))
        cfg = space.config_from_params(space.params_from_config(cfg))
        if any(lc.multiplier != "exact" for lc in cfg.values()) and cfg not in out:
            out.append(cfg)
    return out


def uniform_configs(space, n: int, rng, q_range=(0.0, 1.0)) -> list[dict]:
    """Each searchable layer approximate with probability q ~ U(q_range), a uniformly chosen (multiplier, cv)."""
    from dse.layer_config import LayerConfig

    out = []
    while len(out) < n:
        q = rng.uniform(*q_range)
        cfg = {}
        for name in space.searchable:
            c = space.choices[name]
            mults = [m for m in c.multipliers if m != "exact"]
            if mults and rng.uniform() < q:
                cfg[name] = LayerConfig(str(mults[rng.integers(len(mults))]), bool(c.cv[rng.integers(len(c.cv))]))
        if cfg:
            out.append(space.config_from_params(space.params_from_config(cfg)))
    return out


def measure(ctx, cfgs: list[dict], exact: np.ndarray):
    """Paired loss and its standard error of each configuration on all images, its losses on the even and the odd
    images (two independent halves: how well the measured losses rank themselves), and the wall time of each."""
    from dse.search.racing import paired_stats

    losses, ses, halves, secs = [], [], [], []
    for c in cfgs:
        t0 = time.perf_counter()
        hit = ctx.evaluator.correct(c, 0, exact.size)
        secs.append(time.perf_counter() - t0)
        st = paired_stats(exact, hit)
        losses.append(st.loss)
        ses.append(st.se)
        halves.append([paired_stats(exact[h::2], hit[h::2]).loss for h in (0, 1)])
    return np.array(losses), np.array(ses), np.array(halves), np.array(secs)


def split_half(halves: np.ndarray) -> float:
    """Spearman of the two halves' losses, stepped up to the whole set (Spearman-Brown): the rank agreement a perfect
    predictor could show against these noisy measurements."""
    from dse.predict import spearman

    r = spearman(halves[:, 0], halves[:, 1])
    return 2 * r / (1 + r) if r > -1 else float("nan")


def _scores(pred, y) -> dict:
    from dse.predict import spearman

    pred, y = np.asarray(pred, float), np.asarray(y, float)
    ok = np.isfinite(pred)
    if ok.sum() < 2:
        return {"spearman": float("nan"), "mae": float("nan"), "n": int(ok.sum())}
    return {"spearman": spearman(pred[ok], y[ok]), "mae": float(np.mean(np.abs(pred[ok] - y[ok]))),
            "worst": float(np.max(np.abs(pred[ok] - y[ok]))), "n": int(ok.sum())}


def _feature_lists(cands, cfgs) -> dict:
    return {c.kind: [None if r is None else r.tolist() for r in _rows(c, cfgs)] for c in cands}


def _rows(cand, cfgs):
    return [cand.features(c) for c in cfgs]


def _timed_rows(cand, cfgs) -> tuple[list, list[float]]:
    """Feature rows and the wall time of each (a configuration's first prediction: nothing cached for it)."""
    rows, secs = [], []
    for c in cfgs:
        t0 = time.perf_counter()
        rows.append(cand.features(c))
        secs.append(time.perf_counter() - t0)
    return rows, secs


def _fit_predict(cand, rows_fit, y_fit, rows_new) -> list[float]:
    keep = [i for i, r in enumerate(rows_fit) if r is not None]
    f = cand.fit(np.stack([rows_fit[i] for i in keep]), np.asarray(y_fit)[keep])
    return [float("nan") if r is None else float(f(r)) for r in rows_new]


def prequential(cand, rows0, y0, rows, y, start: int) -> list[float]:
    """Point i (i >= start) predicted by the candidate fitted on the set-up's points and points < i."""
    return [_fit_predict(cand, list(rows0) + list(rows[:i]), list(y0) + list(y[:i]), [rows[i]])[0]
            for i in range(start, len(rows))]


def _propagated(ctx, n: int, seed: int):
    """The search's gate candidates with the propagated surrogate rebuilt on the first ``n`` search images."""
    from dse.predict import PropagatedSurrogate, propagated_candidate

    data = ctx.evaluator.data
    prop = propagated_candidate(PropagatedSurrogate(ctx.evaluator.emulator, data.images(0, n), data.y[:n], seed))
    return [prop if c.kind == prop.kind else c for c in ctx.predictor.candidates]


def run(budget: Path, images: int, n_near: int, n_uniform: int, seed: int, prop_images: int | None = None) -> dict:
    from dse.predict import LossModel, surrogate_candidate
    from dse.search import seeds
    from dse.search.context import build_context, gate_candidates, setup_fit_configs, settings_from_budget
    from dse.budget import load_budget

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        # no set-up budget: every sensitivity measured, so the knapsack's configurations do not depend on the load
        ctx = build_context(str(_budget_copy(budget, images, Path(tmp) / budget.name)), setup_budget_s=1e12)
    s = settings_from_budget(load_budget(budget))
    sur = ctx.sensitivity.surrogate
    items = seeds.layer_items(ctx.space, ctx.sensitivity, ctx.energy)
    t_setup = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    near = near_budget_configs(ctx.space, items, s.budget_loss, n_near, rng)
    uni = uniform_configs(ctx.space, n_uniform, rng)
    old = [{}] + uniform_configs(ctx.space, 10, np.random.default_rng(seed + 7919), (0.2, 1.0))
    fit0 = setup_fit_configs(ctx.space, s.seed)
    n = ctx.evaluator.n_images
    t0 = time.perf_counter()
    exact = ctx.evaluator.correct({}, 0, n)
    (y_near, se_near, h_near, _), (y_uni, se_uni, h_uni, t_uni) = measure(ctx, near, exact), measure(ctx, uni, exact)
    # the set-up's fit points as the search has them: accuracies on the surrogate's images
    y_fit0 = np.array([sur.acc_exact - float(ctx.evaluator.correct(c, 0, sur.n_images).mean()) for c in fit0])
    y_old = np.array([sur.acc_exact - float(ctx.evaluator.correct(c, 0, sur.n_images).mean()) for c in old])
    t_measure = time.perf_counter() - t0
    out = {"budget": str(budget), "model": ctx.info["model"], "images": n, "surrogate_images": sur.n_images,
           "budget_loss": s.budget_loss, "layers": len(ctx.space.searchable), "setup_s": t_setup,
           "measure_s": t_measure, "near_loss": y_near.tolist(), "near_se": se_near.tolist(),
           "uniform_loss": y_uni.tolist(), "uniform_se": se_uni.tolist(), "setup_info": ctx.info["predictor"],
           "split_half": {"near": split_half(h_near[half_of(n_near):]), "uniform": split_half(h_uni)},
           "emulate_s_per_image": float(np.median(t_uni)) / n, "trial_images": s_images(budget, n),
           "kinds": [c.kind for c in ctx.predictor.candidates]}
    half = half_of(n_near)
    # the search's own candidates (dse.search.context.gate_candidates)
    cands = _propagated(ctx, prop_images, s.seed) if prop_images else ctx.predictor.candidates
    out["propagated_images"] = prop_images or sur.n_images
    for cand in cands:
        r0, rn = _rows(cand, fit0), _rows(cand, near)
        ru, t_pred = _timed_rows(cand, uni)   # after the others: mostly warm per-choice state, as in a search
        pre = prequential(cand, r0, y_fit0, rn, y_near, half)
        out[cand.kind] = {"predict_s": float(np.median(t_pred)), "near": _scores(pre, y_near[half:]),
                          "uniform": _scores(_fit_predict(cand, r0 + rn, list(y_fit0) + list(y_near), ru), y_uni),
                          "setup_only_near": _scores(_fit_predict(cand, r0, y_fit0, rn[half:]), y_near[half:])}
    # before: old fit set, the raw surrogate loss alone (the soft feature zeroed)
    raw = lambda cfgs: [np.array([sur.raw_loss(c), 0.0, 0.0]) for c in cfgs]  # noqa: E731
    before = surrogate_candidate(sur)
    out["before"] = {"near": _scores(_fit_predict(before, raw(old), y_old, raw(near[half:])), y_near[half:]),
                     "uniform": _scores(_fit_predict(before, raw(old), y_old, raw(uni)), y_uni)}
    out["points"] = {"setup": {"loss": y_fit0.tolist(), **_feature_lists(cands, fit0)},
                     "near": {"loss": y_near.tolist(), **_feature_lists(cands, near)},
                     "uniform": {"loss": y_uni.tolist(), **_feature_lists(cands, uni)}}
    m = LossModel.fit(np.stack(_rows(cands[1], fit0) + _rows(cands[1], near)), np.r_[y_fit0, y_near])
    out["surrogate_model"] = {"c": m.c, "w": list(m.w)}
    return out


def s_images(budget: Path, n: int) -> int:
    """Images of a full-fidelity trial of the budget: its ``[data] images`` cap (else ``n``)."""
    from dse.budget import load_budget

    return int(load_budget(budget).data.images or n)


def half_of(n_near: int) -> int:
    """Near-budget points before this index only feed the refit; the rest are scored."""
    return n_near // 2


def _fmt(d: dict) -> str:
    return f"{d['spearman']:.3f} / {100 * d['mae']:.2f} pp (n {d['n']})"


def table(r: dict) -> str:
    se_n, se_u = np.asarray(r["near_se"]), np.asarray(r["uniform_se"])
    yn, yu = np.asarray(r["near_loss"]), np.asarray(r["uniform_loss"])
    head = (f"`{Path(r['budget']).name}` ({Path(r['model']).name}, {r['layers']} searchable layers, budget "
            f"{100 * r['budget_loss']:.1f} pp): {r['images']} search images (losses), logit surrogate on "
            f"{r['surrogate_images']}, propagated surrogate on {r['propagated_images']}; near-budget losses {100 * yn.min():.2f}..{100 * yn.max():.2f} pp (paired SE "
            f"median {100 * np.median(se_n):.2f} pp), uniform {100 * yu.min():.1f}..{100 * yu.max():.1f} pp (SE median "
            f"{100 * np.median(se_u):.2f} pp); set-up {r['setup_s']:.0f} s, measuring {r['measure_s']:.0f} s")
    lines = [head, "", "| predictor | near budget, as trials arrive: Spearman / MAE | uniform random: Spearman / MAE |",
             "|---|---|---|",
             f"| noise ceiling: split-half Spearman of the measured losses | {r['split_half']['near']:.3f} | "
             f"{r['split_half']['uniform']:.3f} |",
             f"| before: surrogate, raw loss, old fit set | {_fmt(r['before']['near'])} | {_fmt(r['before']['uniform'])} |"]
    for kind in r["kinds"]:
        lines.append(f"| {kind}, refitted (set-up + earlier near-budget points) | {_fmt(r[kind]['near'])} | "
                     f"{_fmt(r[kind]['uniform'])} |")
        lines.append(f"| {kind}, set-up fit only | {_fmt(r[kind]['setup_only_near'])} | - |")
    m = r["surrogate_model"]
    trial = r["emulate_s_per_image"] * r["trial_images"]
    lines += ["", f"Time per prediction (median over the uniform configurations, first prediction of each; one run, "
              f"side by side) against an emulated full-fidelity trial ({r['trial_images']} images, "
              f"{1e3 * trial:.0f} ms: the median measuring time per image x images):", "",
              "| predictor | ms per prediction | emulated trial / prediction |", "|---|---|---|"]
    lines += [f"| {k} | {1e3 * r[k]['predict_s']:.2f} | {trial / max(r[k]['predict_s'], 1e-9):.0f}x |"
              for k in r["kinds"]]
    lines.append("")
    lines.append(f"Surrogate loss model on all points: {m['w'][0]:.3g} r / (1 + {m['c']:.3g} r) + {m['w'][1]:.3g} soft "
                 f"+ {m['w'][2]:.3g} rms.")
    return "\n".join(lines)


def write_results(budget: str, cmd: str, text: str, variant: str = "") -> None:
    old = RESULTS.read_text()
    sec = re.search(r"^## Predictor\n.*?(?=^## )", old, re.S | re.M)
    if not sec:
        raise SystemExit("RESULTS.md has no '## Predictor' section")
    marker = f"<!-- bench_predict {Path(budget).name}{variant} -->"
    block = f"{marker}\n{cmd}\n\n{text.rstrip()}\n{marker} end\n"
    body = sec.group(0)
    pat = re.compile(re.escape(marker) + r"\n.*?" + re.escape(marker) + r" end\n", re.S)
    body = pat.sub(lambda _: block, body) if pat.search(body) else body.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(old[:sec.start()] + body + old[sec.end():])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("budget", type=Path)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--near", type=int, default=40)
    ap.add_argument("--uniform", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--propagated-images", type=int, default=None,
                    help="images of the propagated surrogate (default: the search's, as the logit surrogate's)")
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument("--json", type=Path, help="also write every point (features, measured losses) to this file")
    a = ap.parse_args()
    r = run(a.budget, a.images, a.near, a.uniform, a.seed, a.propagated_images)
    t = table(r)
    print(t)
    if a.json:
        import json

        a.json.write_text(json.dumps(r, indent=1, default=float))
    if a.write_results:
        extra = f" --propagated-images {a.propagated_images}" if a.propagated_images else ""
        write_results(str(a.budget), f"`python benchmarks/bench_predict.py {a.budget} --images {a.images} --near "
                      f"{a.near} --uniform {a.uniform} --seed {a.seed}{extra}`", t, extra)
        print(f"updated {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
