"""Figures 3e/10 and 4 of Alvarez-Melis & Fusi (section 7.2) from a sweep of ``task=transfer`` runs.

    python scripts/transfer_figures.py outputs/multirun/DATE/TIME [--out DIR] [--family otdd]

writes ``transfer_settings.png`` (accuracy per adaptation setting, per domain pair, one panel
per k: the figure 3e / 10 layout) and ``transfer_gain_vs_distance.png`` (gain over the
target-only baseline against the OTDD between the domains, flows beside fine-tuning: the
figure 4 layout), next to ``dsflow-report``'s ``transfer.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="a sweep (or any tree) of transfer runs")
    parser.add_argument("--out", default=None, help="where to write the figures (default: the directory)")
    parser.add_argument("--family", default=None, help="only runs of this flow family (otdd, mmd_sw, ...)")
    args = parser.parse_args(argv)

    from dsflow.report import find_runs
    from dsflow.tasks.transfer import plot_gain_vs_distance, plot_settings_by_pair, transfer_table

    runs = find_runs(args.directory)
    out = Path(args.out or args.directory)
    out.mkdir(parents=True, exist_ok=True)
    done = [plot_settings_by_pair(runs, out / "transfer_settings.png", family=args.family),
            plot_gain_vs_distance(runs, out / "transfer_gain_vs_distance.png")]
    if not any(done):
        print(f"error: no finished transfer runs under {args.directory}", file=sys.stderr)
        return 2
    table = transfer_table(runs)
    (out / "transfer.md").write_text(table)
    print(table)
    print("\n".join(str(p) for p in done if p))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
