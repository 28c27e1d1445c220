"""Command-line interface. Thin: parse arguments, call the modules, print.

Every command catches :class:`dse.errors.DseError` through :func:`main` and exits 2 with a one-line message.
Each command group lives between its own BEGIN/END markers; edit only your own block.
"""
from __future__ import annotations

import sys

import click

from dse import __version__
from dse.errors import DseError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dse")
def cli() -> None:
    """Design-space exploration of approximate-arithmetic DNN accelerators."""


# BEGIN multipliers
# END multipliers

# BEGIN evaluate
# END evaluate

# BEGIN search
# END search

# BEGIN report
# END report

# BEGIN predict
# END predict


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="dse", standalone_mode=False)
    except DseError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
