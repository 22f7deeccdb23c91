"""results.png: ratios against their goals, per-job latency, and the scale steps."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RATIOS = ("overhead", "vs_minimal", "jobs_ratio", "rss_ratio", "rss_above_idle_ratio")
LATENCY = ("floor_ms", "minimal_ms", "ours_ms", "peer_ms")


def _bars(ax, figures, keys, title, unit):
    keys = [k for k in keys if k in figures and figures[k].samples]
    if not keys:
        ax.set_visible(False)
        return
    medians = [figures[k].median for k in keys]
    errors = [
        [m - figures[k].low for k, m in zip(keys, medians, strict=False)],
        [figures[k].high - m for k, m in zip(keys, medians, strict=False)],
    ]
    ax.bar(range(len(keys)), medians, yerr=errors, capsize=4, color="#4c72b0")
    for i, k in enumerate(keys):
        goal = figures[k].goal
        if goal:
            limit = float(goal.split()[1])
            ax.hlines(limit, i - 0.4, i + 0.4, colors="#c44e52", linestyles="--")
            ax.annotate(goal, (i, limit), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(keys, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(unit)
    ax.set_title(title, fontsize=9)


def plot(figures, extra, info, path):
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    _bars(axes[0], figures, RATIOS, "ratios (median, min-max; dashed: goal)", "x")
    _bars(axes[1], figures, LATENCY, "per-job latency", "ms")
    steps = extra.get("scale_steps") or []
    if steps:
        steps = sorted(steps, key=lambda r: r["devices"])
        axes[2].plot([r["devices"] for r in steps], [r["p99_ms"] for r in steps], "o-", label="p99")
        axes[2].plot([r["devices"] for r in steps], [r["p50_ms"] for r in steps], "s--", label="p50")
        axes[2].axhline(50, color="#c44e52", linestyle="--", label="50 ms")
        axes[2].set_xscale("log")
        axes[2].set_yscale("log")
        axes[2].set_xlabel("devices (5 jobs each)")
        axes[2].set_ylabel("response latency, ms")
        axes[2].legend(fontsize=7)
        axes[2].set_title("stand-in scale", fontsize=9)
    else:
        axes[2].set_visible(False)
    fig.suptitle(
        f"{info.get('date')}  {info.get('nproc')} x {info.get('cpu')}  Python {info.get('python')}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
