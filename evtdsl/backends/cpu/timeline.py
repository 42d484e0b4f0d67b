"""A Gantt chart of a run: one row per worker, one bar per task, coloured by launch (the CPU backend's
simulated spans, or a traced GPU launch's tasks)."""
from __future__ import annotations

from .simulator import Span


def plot_timeline(spans: list[Span], workers: int, ax=None, xlabel: str = "simulated time (tile ops)"):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(10, min(0.4 * workers + 1.2, 10)))
    launches = list(dict.fromkeys(s.launch for s in spans))
    colors = plt.get_cmap("tab10")
    for s in spans:
        c = colors(launches.index(s.launch) % 10)
        ax.broken_barh([(s.start, s.end - s.start)], (s.worker - 0.4, 0.8), facecolors=c,
                       edgecolor="white" if workers <= 40 else "none")
    step = 1 if workers <= 40 else 10  # a GPU launch's hundreds of CTAs: every tenth labelled
    ax.set_yticks(range(0, workers, step), [f"worker {w}" for w in range(0, workers, step)])
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors(i % 10)) for i in range(len(launches))]
    ax.legend(handles, launches, loc="upper right", fontsize="small")
    return ax
