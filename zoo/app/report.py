"""Rich output of a run: the resolved config as a tree, the final metrics as a table."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

console = Console()


def print_config(cfg: DictConfig) -> None:
    """The resolved config, one branch per top-level group."""
    tree = Tree("config", style="bold")
    for key, value in cfg.items():
        if key == "hydra":
            continue
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(f"[bold cyan]{key}[/]").add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    console.print(tree)


def print_summary(metrics: dict[str, float], output_dir: str | Path) -> None:
    """A table of the final metrics and the line that opens them in TensorBoard."""
    table = Table(title="final metrics")
    table.add_column("metric", style="cyan")
    table.add_column("value", justify="right")
    for name in sorted(metrics):
        value = metrics[name]
        table.add_row(name, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"run folder: {output_dir}")
    console.print(f"compare runs: [bold]tensorboard --logdir {Path(output_dir).parent}[/]")
