"""Rich output of a run: where the resolved config is (or the config itself, as a tree), the final metrics as a table."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

console = Console()


def print_config_file() -> None:
    """One line naming the resolved config Hydra wrote for this run (``<run folder>/.hydra/config.yaml``), if any."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    folder = OmegaConf.select(hydra, "runtime.output_dir") if hydra is not None else None
    if folder is None or hydra.output_subdir is None:
        return
    path = Path(folder) / hydra.output_subdir / "config.yaml"
    if path.is_file():
        console.print(f"resolved config: {path} (print_config=true prints it here)", soft_wrap=True, highlight=False)


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
