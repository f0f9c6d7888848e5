"""Headless Matplotlib figures written atomically, for the plotting tools."""
import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from utils.io import atomic_write_bytes


def new_figure(num_panels, panel_size=(5.0, 4.0), title=None):
    """A figure with `num_panels` side-by-side axes on the Agg canvas (no display needed)."""
    figure = Figure(figsize=(panel_size[0] * num_panels, panel_size[1]), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, num_panels, squeeze=False)[0]
    if title:
        figure.suptitle(title)
    return figure, axes


def save_png(figure, path, dpi=100):
    """Writes `figure` as a PNG; a crash mid-write never leaves a truncated image."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())
    return path
