"""The book's training plots: train vs validation over examples seen."""

from __future__ import annotations

from pathlib import Path

from .files import atomic_path


def plot_history(history: dict, run_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = history["epochs"]
    metric = epochs[0].get("metric", "accuracy") if epochs else "accuracy"  # label sets: micro-F1; numbers: R²
    curves = {
        "loss.png": ("loss", history["eval"], "train_loss", "val_loss"),
        "accuracy.png": (metric, epochs, "train_accuracy", "val_accuracy"),
    }
    for filename, (what, points, train_key, val_key) in curves.items():
        fig, ax = plt.subplots(figsize=(5, 3))
        if points:
            seen = [p["examples_seen"] for p in points]
            ax.plot(seen, [p[train_key] for p in points], label=f"Training {what}")
            if all(val_key in p for p in points):  # tune's winner trains on the validation split too
                ax.plot(seen, [p[val_key] for p in points], linestyle="-.", label=f"Validation {what}")
            ax.legend()
        ax.set_xlabel("Examples seen")
        ax.set_ylabel(what[:1].upper() + what[1:])
        fig.tight_layout()
        with atomic_path(run_dir / filename) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
