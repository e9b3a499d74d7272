"""A study's table and figure, from its runs' result files; what is missing is listed.

The study file's ``report`` says what to draw (every kind writes ``<name>.md``, ``<name>.csv`` and,
except ``table``, ``<name>.png`` in the study's ``report/`` folder):

* ``{kind: table}`` (Tables 1 and 2): points x tasks, the test metric as mean ± sample std over
  folds and seeds, with the number of runs, and the trainable parameters of each point;
* ``{kind: ablation, reference: mambadapter}`` (Table 3): the same, with each cell's difference
  to the reference point's mean on that task;
* ``{kind: scaling}`` (Fig. 2): the metric against the trainable parameters, one line per point
  label (``label``, default the hparams file), error bars one standard deviation over seeds;
* ``{kind: heatmaps, panels: [[d_conv, d_state], [d_conv, expand]]}`` (Fig. 3): per task and
  panel, the metric over two grid keys, averaged over the other grid keys and the seeds.

Metrics come from ``speechbrain_mambadapter.results.read_result``: test accuracy (classification)
or WER (Common Voice), in percent. A partial study gives partial cells (their run counts say so)
and a list of the runs still missing.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import csv
import os

from speechbrain_mambadapter.results import mean_std, read_result

KINDS = ("table", "ablation", "scaling", "heatmaps")


class ReportError(ValueError):
    """A study's report settings that do not fit its points."""


def collect(runs):
    """``[(run, result or None)]`` for the study's runs (a result file cut short counts as missing)."""
    collected = []
    for run in runs:
        try:
            result = read_result(run.output_folder)
        except ValueError:
            result = None
        collected.append((run, result))
    return collected


def cells(collected):
    """Statistics per (point, task): ``mean``, ``std``, ``runs``, ``expected``, ``parameters``."""
    grouped = {}
    for run, result in collected:
        grouped.setdefault((run.point.experiment, run.task.name), []).append((run, result))
    table = {}
    for key, members in grouped.items():
        values = [r["value"] for _, r in members if r is not None]
        params = sorted({r["trainable_parameters"] for _, r in members if r and r["trainable_parameters"]})
        mean, std = mean_std(values) if values else (None, None)
        metric = next((r["metric"] for _, r in members if r is not None), None)
        table[key] = {
            "point": members[0][0].point,
            "task": key[1],
            "metric": metric,
            "mean": mean,
            "std": std,
            "runs": len(values),
            "expected": len(members),
            "parameters": params,
        }
    return table


def missing_runs(collected):
    """The runs without a result, grouped: ``{"<task>/<experiment>": ["fold1/seed10", ...]}``."""
    missing = {}
    for run, result in collected:
        if result is None:
            rest = run.name.split("/", 2)[2]
            missing.setdefault(f"{run.task.name}/{run.point.experiment}", []).append(rest)
    return missing


def write_report(study, runs, folder):
    """Write the study's table(s) and figure to ``folder``; return the paths written.

    Raises
    ------
    ReportError
        When ``report`` names an unknown kind, a reference point that does not exist, or heatmap
        panels over keys that are not grid keys.
    """
    kind = study.report.get("kind", "table")
    if kind not in KINDS:
        raise ReportError(f"{study.path}: report kind {kind!r} is not one of {list(KINDS)}.")
    os.makedirs(folder, exist_ok=True)
    collected = collect(runs)
    stats = cells(collected)
    base = os.path.join(folder, study.name)
    tasks = [task.name for task in study.tasks]
    points = [point for point in study.points]
    if kind in ("table", "ablation"):
        reference = study.report.get("reference") if kind == "ablation" else None
        if kind == "ablation" and reference not in {p.experiment for p in points}:
            raise ReportError(
                f"{study.path}: report reference {reference!r} is not one of the points "
                f"{[p.experiment for p in points]}."
            )
        markdown, rows = _table(stats, points, tasks, reference)
        figure = None
    elif kind == "scaling":
        markdown, rows = _scaling_table(stats, points, tasks)
        figure = _scaling_figure(study, stats, points, tasks, base + ".png")
    else:
        panels = study.report.get("panels")
        grid_keys = {key for point in points for key in point.values}
        if not panels or any(len(p) != 2 or not set(p) <= grid_keys for p in panels):
            raise ReportError(
                f"{study.path}: heatmaps need panels: [[row key, column key], ...] over the grid keys "
                f"{sorted(grid_keys)}, got {panels!r}."
            )
        markdown, rows = _heatmap_tables(collected, panels, tasks)
        figure = _heatmap_figure(study, collected, panels, tasks, base + ".png")
    missing = missing_runs(collected)
    done = sum(1 for _, result in collected if result is not None)
    lines = [f"# {study.name}", ""]
    if study.description:
        lines += [study.description.strip(), ""]
    lines += [f"{done} of {len(collected)} runs have a result.", "", markdown, ""]
    if figure:
        lines += [f"![{study.name}]({os.path.basename(figure)})", ""]
    if missing:
        lines += [f"## Missing runs ({len(collected) - done})", ""]
        lines += [f"- {cell}: {', '.join(names)}" for cell, names in missing.items()]
        lines.append("")
    written = [base + ".md", base + ".csv"] + ([figure] if figure else [])
    with open(base + ".md", "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    with open(base + ".csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)
    return written


def _fmt(mean, std):
    if mean is None:
        return "–"
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def _millions(counts):
    return " / ".join(f"{c / 1e6:.3f}" for c in counts) if counts else "–"


def _exact(counts):
    return " / ".join(f"{c:,}" for c in counts) if counts else "–"


def _metric_name(stats):
    names = {c["metric"] for c in stats.values() if c["metric"]}
    return " / ".join(sorted(names)) or "metric"


def _table(stats, points, tasks, reference=None):
    metric = _metric_name(stats)
    header = ["Method", "Params (M)"] + tasks
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = []
    for point in points:
        params = sorted(
            {n for t in tasks for n in stats.get((point.experiment, t), {}).get("parameters", [])}
        )
        line = [point.experiment, _millions(params)]
        for task in tasks:
            cell = stats.get((point.experiment, task))
            if cell is None:
                line.append("")
                continue
            text = f"{_fmt(cell['mean'], cell['std'])} ({cell['runs']}/{cell['expected']})"
            delta = None
            ref = stats.get((reference, task)) if reference else None
            if ref and point.experiment != reference and cell["mean"] is not None and ref["mean"] is not None:
                delta = cell["mean"] - ref["mean"]
                text += f" Δ {delta:+.2f}"
            line.append(text)
            rows.append(
                {
                    "experiment": point.experiment,
                    "task": task,
                    "metric": cell["metric"] or "",
                    "mean": cell["mean"],
                    "std": cell["std"],
                    "runs": cell["runs"],
                    "expected": cell["expected"],
                    "trainable_parameters": "/".join(str(n) for n in cell["parameters"]),
                    **({"delta_to_reference": delta} if reference else {}),
                }
            )
        lines.append("| " + " | ".join(line) + " |")
    lines += [
        "",
        f"Test {metric} (%), mean ± sample std over folds and seeds (runs with a result / runs of the cell)"
        + (f"; Δ: difference to {reference} on the same task." if reference else ".")
        + " Params: trainable backbone parameters in millions.",
    ]
    return "\n".join(lines), rows


def _scaling_table(stats, points, tasks):
    metric = _metric_name(stats)
    grid_keys = list(dict.fromkeys(key for point in points for key in point.values))
    header = ["Task", "Series", *grid_keys, "Params", f"{metric} (%)", "Runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = []
    for task in tasks:
        for point in points:
            cell = stats.get((point.experiment, task))
            if cell is None:
                continue
            values = [str(point.values.get(key, "")) for key in grid_keys]
            counts = f"{cell['runs']}/{cell['expected']}"
            texts = [
                task,
                point.label,
                *values,
                _exact(cell["parameters"]),
                _fmt(cell["mean"], cell["std"]),
                counts,
            ]
            lines.append("| " + " | ".join(texts) + " |")
            rows.append(
                {
                    "task": task,
                    "series": point.label,
                    "experiment": point.experiment,
                    **{key: point.values.get(key, "") for key in grid_keys},
                    "trainable_parameters": "/".join(str(n) for n in cell["parameters"]),
                    "metric": cell["metric"] or "",
                    "mean": cell["mean"],
                    "std": cell["std"],
                    "runs": cell["runs"],
                    "expected": cell["expected"],
                }
            )
    lines += ["", f"Test {metric} (%), mean ± sample std over seeds; Params: trainable backbone parameters."]
    return "\n".join(lines), rows


def _scaling_figure(study, stats, points, tasks, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        series = {}
        for point in points:
            cell = stats.get((point.experiment, task))
            if cell and cell["mean"] is not None and cell["parameters"]:
                series.setdefault(point.label, []).append(
                    (sum(cell["parameters"]) / len(cell["parameters"]), cell["mean"], cell["std"] or 0.0)
                )
        for label, values in series.items():
            values.sort()
            xs, ys, es = zip(*values)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
        metric = _metric_name({k: v for k, v in stats.items() if k[1] == task})
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel(f"test {metric} (%)")
        ax.set_title(task)
        ax.grid(True, alpha=0.3)
        if series:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no results yet", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"{study.name}: mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def heatmap(collected, task, row_key, col_key):
    """Mean metric over (``row_key``, ``col_key``) values of ``task``'s runs, averaged over everything
    else (other grid keys and seeds).

    Returns
    -------
    (list, list, dict)
        Row values, column values (sorted) and ``{(row, col): (mean, runs, expected)}``.
    """
    groups = {}
    for run, result in collected:
        if run.task.name != task or row_key not in run.point.values or col_key not in run.point.values:
            continue
        key = (run.point.values[row_key], run.point.values[col_key])
        groups.setdefault(key, []).append(None if result is None else result["value"])
    rows = sorted({r for r, _ in groups}, key=_sort_key)
    cols = sorted({c for _, c in groups}, key=_sort_key)
    table = {}
    for key, values in groups.items():
        present = [v for v in values if v is not None]
        table[key] = (sum(present) / len(present) if present else None, len(present), len(values))
    return rows, cols, table


def _sort_key(value):
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def _heatmap_tables(collected, panels, tasks):
    lines, rows_out = [], []
    metric = next((r["metric"] for _, r in collected if r), "metric")
    for task in tasks:
        for row_key, col_key in panels:
            rows, cols, table = heatmap(collected, task, row_key, col_key)
            lines += [f"**{task}: test {metric} (%) by {row_key} (rows) and {col_key} (columns)**", ""]
            lines.append("| " + " | ".join([f"{row_key} \\ {col_key}", *map(str, cols)]) + " |")
            lines.append("|" + "---|" * (len(cols) + 1))
            for r in rows:
                texts = []
                for c in cols:
                    mean, n, expected = table.get((r, c), (None, 0, 0))
                    texts.append(
                        "–"
                        if mean is None
                        else f"{mean:.2f}" + ("" if n == expected else f" ({n}/{expected})")
                    )
                    if expected:
                        rows_out.append(
                            {"task": task, "rows": row_key, "row": r, "columns": col_key, "column": c,
                             "metric": metric, "mean": mean, "runs": n, "expected": expected}
                        )  # fmt: skip
                lines.append("| " + " | ".join([str(r), *texts]) + " |")
            lines.append("")
    lines.append(
        "Each cell: mean over the seeds and the other grid keys; (n/m): only n of its m runs have a result."
    )
    return "\n".join(lines), rows_out


def _heatmap_figure(study, collected, panels, tasks, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metric = next((r["metric"] for _, r in collected if r), "metric")
    fig, axes = plt.subplots(
        len(tasks), len(panels), figsize=(4.8 * len(panels), 4.2 * len(tasks)), squeeze=False
    )
    cmap = "viridis_r" if metric == "WER" else "viridis"
    for i, task in enumerate(tasks):
        for j, (row_key, col_key) in enumerate(panels):
            ax = axes[i][j]
            rows, cols, table = heatmap(collected, task, row_key, col_key)
            grid = np.full((len(rows), len(cols)), np.nan)
            for (r, c), (mean, _, _) in table.items():
                if mean is not None:
                    grid[rows.index(r), cols.index(c)] = mean
            image = ax.imshow(grid, cmap=cmap, aspect="auto")
            ax.set_xticks(range(len(cols)), [str(c) for c in cols])
            ax.set_yticks(range(len(rows)), [str(r) for r in rows])
            ax.set_xlabel(col_key)
            ax.set_ylabel(row_key)
            for (r, c), (mean, _, _) in table.items():
                if mean is None:
                    text, color = "–", "k"
                else:
                    red, green, blue, _ = image.cmap(image.norm(mean))
                    text = f"{mean:.1f}"
                    color = "k" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "w"
                ax.text(cols.index(c), rows.index(r), text, ha="center", va="center", color=color, fontsize=8)
            others = sorted({k for run, _ in collected for k in run.point.values} - {row_key, col_key})
            ax.set_title(f"{task}: {metric} (%)" + (f", mean over {', '.join(others)}" if others else ""))
            fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
