"""Claims verdicts on synthetic frames built to have a known answer.

Each study here is three frames with the analysis schema's column names
(accuracy a fraction), made by :func:`synthetic`; the knobs set the true
effects, and the tests check that :func:`analysis._claims.claims` finds
each verdict where it should: supported, contradicted, and inconclusive
for too few seeds, for an interval that straddles the threshold, and for a
claim the study does not cover.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from analysis._claims import CLAIM_COLUMNS, COST_LIMIT_PCT, claims, format_claims
from analysis._stats import MIN_N, mean_interval, paired_differences, quartiles

# Claim texts as the table starts them (the table's own wording is the key).
XS = "XSAM ≥ SAM"
SAM_FALLS = "SAM's accuracy falls"
XSAM_HOLDS = "XSAM's accuracy does not fall"
COST = "XSAM's extra cost"
STABLE = "α* is stable"
P11 = "L(v1) > L(v0)"
P12 = "L(v(α*)) ≥ L(v1)"


@dataclass
class Frames:
    """What :func:`claims` reads from a study."""

    trials: pd.DataFrame
    epochs: pd.DataFrame
    probes: pd.DataFrame = field(default_factory=pd.DataFrame)


def synthetic(
    *,
    acc: Callable[[str, int, int], float],
    optimizers: tuple[str, ...] = ("sam", "xsam"),
    steps: tuple[int, ...] = (1, 2, 5),
    seeds: tuple[int, ...] = (0, 1, 2),
    xsam_seeds: tuple[int, ...] | None = None,
    epochs: int = 6,
    probe_pct: float = 1.0,
    alpha: Callable[[int], float] = lambda e: 0.5 + 0.1 * (e % 2),
    v1_minus_v0: float = 0.05,
    best_minus_v1: float = 0.01,
    alpha_delta: float = 0.1,
    refresh_every: float = 1.0,
    probe_records: bool = True,
    floor_scale: float = 1.0,
) -> Frames:
    """A study with the given true effects.

    Args:
        acc: (optimizer, k, seed) → final test accuracy in percent.
        probe_pct: XSAM's probe time in percent of its forward/backward time.
        alpha: epoch → α* of every XSAM trial.
        v1_minus_v0, best_minus_v1: L(v1) − L(v0) and L(v(α*)) − L(v1) at every refresh.
        probe_records: whether ``.probes`` carries loss_v0/v1/best (else only
            the epochs' probe_loss_* columns do).
        floor_scale: the analytic floor (probe forwards against training
            passes) over ``probe_pct``.
    """
    rng = np.random.default_rng(0)
    trials, rows, probes = [], [], []
    for opt in optimizers:
        for k in steps:
            for seed in xsam_seeds if (opt == "xsam" and xsam_seeds) else seeds:
                tid = f"{opt}_{k}_{seed}"
                trials.append(
                    {
                        "trial_id": tid,
                        "optimizer": opt,
                        "steps": k,
                        "seed": seed,
                        "status": "finished",
                        "final_test_acc": acc(opt, k, seed) / 100.0,  # a fraction in the frames
                        "refresh_every": refresh_every if opt == "xsam" else np.nan,
                        "refresh_unit": "epoch" if opt == "xsam" else None,
                        "alpha_delta": alpha_delta if opt == "xsam" else np.nan,
                        "alpha_max": 2.0 if opt == "xsam" else np.nan,
                        "dataset": "mnist1d",
                    }
                )
                # 100 steps per epoch of k + 1 passes; probe forwards sized so that the
                # analytic floor (a backward = two forwards) matches probe_pct
                npf = max(1, round(3 * (k + 1) * probe_pct * floor_scale))
                for e in range(1, epochs + 1):
                    passes = (k + 1) * 1.0 * rng.uniform(0.95, 1.05)
                    refreshed = opt == "xsam"
                    v0 = 2.0 + 0.01 * e
                    row = {
                        "trial_id": tid,
                        "optimizer": opt,
                        "steps": k,
                        "seed": seed,
                        "epoch": e,
                        "time_ascent": passes * k / (k + 1),
                        "time_descent": passes / (k + 1),
                        "time_probe": passes * probe_pct / 100.0 * rng.uniform(0.9, 1.1)
                        if refreshed
                        else 0.0,
                        "time_update": 0.05 * passes,
                        "n_forward": 100 * (k + 1) + (npf if refreshed else 0),
                        "n_backward": 100 * (k + 1),
                        "n_probe_forward": npf if refreshed else 0,
                        "alpha": alpha(e) if refreshed else 1.0,
                        "alpha_refreshed": refreshed,
                        "probe_loss_v0": v0 if refreshed else np.nan,
                        "probe_loss_v1": v0 + v1_minus_v0 if refreshed else np.nan,
                        "probe_loss_best": v0 + v1_minus_v0 + best_minus_v1
                        if refreshed
                        else np.nan,
                    }
                    rows.append(row)
                    if refreshed:
                        probes.append(
                            {
                                "trial_id": tid,
                                "refresh_index": e - 1,
                                "epoch": e,
                                "alpha": 0.0,
                                "loss": v0,
                                "alpha_star": alpha(e),
                                "loss_v0": row["probe_loss_v0"],
                                "loss_v1": row["probe_loss_v1"],
                                "loss_best": row["probe_loss_best"],
                            }
                        )
    probe_frame = pd.DataFrame(probes)
    if not probe_records and not probe_frame.empty:
        probe_frame = probe_frame.drop(columns=["loss_v0", "loss_v1", "loss_best"])
    return Frames(pd.DataFrame(trials), pd.DataFrame(rows), probe_frame)


def noise(opt: str, k: int, seed: int, scale: float = 0.1) -> float:
    """A fixed, small per-trial deviation (deterministic)."""
    return scale * float(np.sin(7.0 * seed + 3.0 * k + (1.0 if opt == "xsam" else 0.0)))


def good(opt: str, k: int, seed: int) -> float:
    """SAM falls 0.5 pp per k, XSAM gains 0.2 pp per k: XSAM − SAM = 1 + 0.7·k pp."""
    base = 95.0 - 0.5 * k if opt == "sam" else 96.0 + 0.2 * k
    return base + noise(opt, k, seed)


def bad(opt: str, k: int, seed: int) -> float:
    """The opposite: SAM gains with k, XSAM loses and sits 2 pp below SAM."""
    base = 95.0 + 0.5 * k if opt == "sam" else 93.0 - 0.5 * k
    return base + noise(opt, k, seed)


def rows_of(table: pd.DataFrame, start: str) -> pd.DataFrame:
    sel = table[table["claim"].str.startswith(start)]
    assert len(sel), f"no {start!r} row in:\n{table[['claim', 'scope', 'verdict']]}"
    return sel


def verdicts(table: pd.DataFrame, start: str) -> set[str]:
    return set(rows_of(table, start)["verdict"])


# -- statistics ---------------------------------------------------------------


def test_mean_interval_draws_t_interval_from_three_values_only() -> None:
    values = pd.Series([1.0, 2.0, 3.0, 10.0, 20.0])
    groups = pd.Series(["a", "a", "a", "b", "b"])
    out = mean_interval(values, [groups]).set_index(groups.name or "index")
    a, b = out.iloc[0], out.iloc[1]
    # t(0.975, 2) = 4.302653: half-width 4.302653 * 1 / sqrt(3)
    assert a["n"] == 3 and a["low"] == pytest.approx(2.0 - 4.302653 / 3**0.5, rel=1e-6)
    assert a["interval"].startswith("95% t-interval")
    assert b["n"] == 2 and np.isnan(b["low"]) and np.isnan(b["high"])
    assert "n < 3" in b["interval"]


def test_quartiles_and_pairs() -> None:
    q = quartiles(pd.Series([1.0, 2.0, 3.0, 4.0, 100.0])).iloc[0]
    assert (q["median"], q["q25"], q["q75"], q["n"]) == (3.0, 2.0, 4.0, 5)
    frame = pd.DataFrame(
        {
            "optimizer": ["sam", "xsam", "sam", "xsam", "sam"],
            "seed": [0, 0, 1, 1, 2],
            "acc": [90.0, 91.5, 80.0, 80.5, 70.0],
        }
    )
    d = paired_differences(frame, value="acc", arm="optimizer", first="sam", second="xsam")
    # seed 2 has no XSAM trial: only the two shared seeds are compared
    assert d["seed"].tolist() == [0, 1] and d["diff"].tolist() == [1.5, 0.5]


# -- verdicts ------------------------------------------------------------------


def test_columns_and_unit() -> None:
    table = claims(synthetic(acc=good))
    assert list(table.columns) == list(CLAIM_COLUMNS)
    xs = rows_of(table, XS)
    assert set(xs["unit"]) == {"pp"}  # accuracy effects in percentage points, not fractions
    # XSAM − SAM = 1 + 0.7·k pp by construction (see `good`), within the noise
    expected = 1.0 + 0.7 * xs["scope"].str.removeprefix("k=").astype(float)
    assert np.allclose(xs["effect"], expected, atol=0.3)


def test_supported_when_the_data_say_so() -> None:
    table = claims(synthetic(acc=good))
    for claim in (XS, SAM_FALLS, XSAM_HOLDS, COST, STABLE, P11, P12):
        assert verdicts(table, claim) == {"supported"}, table[["claim", "scope", "why"]]
    xs = rows_of(table, XS)
    assert sorted(xs["scope"]) == ["k=1", "k=2", "k=5"]
    assert (xs["n"] == 3).all() and set(xs["n_of"]) == {"shared seeds"}
    sam = rows_of(table, SAM_FALLS).iloc[0]
    # k=1 → k=5: 4 × −0.5 pp, within the noise
    assert sam["effect"] == pytest.approx(-2.0, abs=0.3) and sam["high"] < 0
    cost = rows_of(table, COST).iloc[0]
    assert cost["effect"] == pytest.approx(1.0, abs=0.15) and cost["n_of"] == "epochs"
    assert cost["n"] == 3 * 5  # 3 seeds × epochs after the first


def test_contradicted_when_the_data_say_the_opposite() -> None:
    frames = synthetic(
        acc=bad,
        probe_pct=10.0,
        alpha=lambda e: 0.2 if e % 2 else 1.4,  # jumps 12 grid steps every epoch
        v1_minus_v0=-0.05,
        best_minus_v1=-0.02,  # possible when α = 1 is off the grid
        alpha_delta=0.1,
    )
    table = claims(frames)
    for claim in (XS, SAM_FALLS, XSAM_HOLDS, COST, STABLE, P11, P12):
        assert verdicts(table, claim) == {"contradicted"}, table[["claim", "scope", "why"]]
    assert rows_of(table, COST).iloc[0]["low"] > COST_LIMIT_PCT


def test_prop12_contradicted_at_alpha_delta_0_3_names_the_grid() -> None:
    table = claims(synthetic(acc=good, alpha_delta=0.3, best_minus_v1=-0.01))
    row = rows_of(table, P12).iloc[0]
    assert row["verdict"] == "contradicted" and "not a grid point" in row["why"]
    on_grid = rows_of(claims(synthetic(acc=good)), P12).iloc[0]
    assert "by construction" in on_grid["why"]


def test_too_few_seeds_is_inconclusive_with_the_individual_values() -> None:
    table = claims(synthetic(acc=good, seeds=(0, 1)))
    for claim in (XS, SAM_FALLS, XSAM_HOLDS):
        sel = rows_of(table, claim)
        assert set(sel["verdict"]) == {"inconclusive"}
        assert sel["why"].str.contains("too few seeds").all()
        assert sel["low"].isna().all() and sel["high"].isna().all()  # no interval drawn
        assert sel["uncertainty"].str.startswith("individual:").all()
        assert (sel["n"] == 2).all()
    # the effect is still reported (the mean of the two differences: 1 + 0.7·k)
    assert rows_of(table, XS)["effect"].between(1.4, 4.8).all()
    # per-trial shares over 2 × 3 = 6 XSAM trials: enough trials for Proposition 1
    assert verdicts(table, P11) == {"supported"}


def test_one_seed_one_k_two_trials_inconclusive() -> None:
    table = claims(synthetic(acc=good, seeds=(0,), steps=(1,)))
    assert rows_of(table, XS).iloc[0]["why"].startswith("too few seeds")
    for claim in (P11, P12):
        row = rows_of(table, claim).iloc[0]
        assert row["verdict"] == "inconclusive" and "too few trials" in row["why"]


def test_interval_straddling_zero_is_inconclusive() -> None:
    def mixed(opt: str, k: int, seed: int) -> float:
        return 95.0 + (1.0 if opt == "xsam" else 0.0) * (1.0 if seed % 2 else -1.0)

    table = claims(synthetic(acc=mixed, seeds=(0, 1, 2, 3)))
    sel = rows_of(table, XS)
    assert set(sel["verdict"]) == {"inconclusive"}
    assert sel["why"].str.contains("contains 0").all()
    assert (sel["low"] < 0).all() and (sel["high"] > 0).all()


def test_cost_iqr_around_the_limit_is_inconclusive() -> None:
    table = claims(synthetic(acc=good, probe_pct=COST_LIMIT_PCT))
    row = rows_of(table, COST).iloc[0]
    assert row["verdict"] == "inconclusive" and row["low"] < COST_LIMIT_PCT < row["high"]


def test_cost_far_below_its_analytic_floor_is_not_a_finding() -> None:
    # 1 % measured where the probe forwards alone predict 10 %: a broken clock
    table = claims(synthetic(acc=good, probe_pct=1.0, floor_scale=10.0))
    sel = rows_of(table, COST)
    assert set(sel["verdict"]) == {"inconclusive"}
    assert sel["why"].str.contains("cannot be right").all()


def test_not_covered_claims_say_so() -> None:
    only_xsam = synthetic(acc=good, optimizers=("xsam",), steps=(1,), refresh_every=5.0)
    only_xsam.epochs = only_xsam.epochs.drop(
        columns=["probe_loss_v0", "probe_loss_v1", "probe_loss_best"]
    )
    only_xsam.probes = pd.DataFrame()
    table = claims(only_xsam)
    for claim, reason in (
        (XS, "no finished SAM trials"),
        (SAM_FALLS, "no finished SAM trials"),
        (XSAM_HOLDS, "one k only"),
        (COST, "refreshes α once per epoch"),
        (P11, "no α refresh"),
        (P12, "no α refresh"),
    ):
        row = rows_of(table, claim).iloc[0]
        assert row["verdict"] == "inconclusive", claim
        assert row["why"].startswith("not covered by the study") and reason in row["why"], row
        assert row["n"] == 0


def test_alpha_pinned_at_the_grid_edge_is_inconclusive() -> None:
    table = claims(synthetic(acc=good, alpha=lambda e: 2.0))
    row = rows_of(table, STABLE).iloc[0]
    assert row["verdict"] == "inconclusive" and "end of the grid" in row["why"]


def test_unshared_seeds_fall_back_to_welch() -> None:
    table = claims(synthetic(acc=good, xsam_seeds=(10, 11, 12)))
    sel = rows_of(table, XS)
    assert set(sel["n_of"]) == {"seeds per side (unpaired)"}
    assert set(sel["verdict"]) == {"supported"}
    assert sel["uncertainty"].str.contains("Welch").all()


def test_proposition_from_epoch_columns_when_probes_lack_the_losses() -> None:
    frames = synthetic(acc=good, v1_minus_v0=-0.05, probe_records=False)
    assert "loss_v0" not in frames.probes.columns
    assert verdicts(claims(frames), P11) == {"contradicted"}


def test_only_complete_trials_count_for_accuracy() -> None:
    frames = synthetic(acc=good)
    # The XSAM seed-2 trials errored: two shared seeds remain per k.
    errored = frames.trials["trial_id"].str.startswith("xsam") & frames.trials["seed"].eq(2)
    frames.trials.loc[errored, "status"] = "errored"
    row = rows_of(claims(frames), XS).iloc[0]
    assert row["n"] == 2 and row["verdict"] == "inconclusive"


def test_format_claims_is_text_in_percent() -> None:
    text = format_claims(claims(synthetic(acc=good)))
    assert list(text.columns) == [
        "claim",
        "paper",
        "effect",
        "uncertainty",
        "n",
        "verdict",
        "why",
    ]
    first = text.iloc[0]
    assert first["effect"].endswith(" pp") and first["n"] == "3 shared seeds"
    assert MIN_N == 3
