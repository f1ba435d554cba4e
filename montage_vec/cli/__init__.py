"""Command line: `montage-vec` / `montage-batch`."""

from montage_vec.cli.app import cli, main

__all__ = ["cli", "main"]
