"""The `vocabshrink` command: parses options and calls each stage's function."""

from __future__ import annotations

import logging
import sys

import click

from .errors import VocabshrinkError


class _Group(click.Group):
    """Prints user errors without a traceback and exits 1."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except VocabshrinkError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="vocabshrink")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Distil BERT-family encoders into small students with a reduced vocabulary.

    \b
    Pipeline:
      vocabshrink build-vocab CORPUS --teacher T --size 10000 --out student-tok
      vocabshrink align CORPUS --teacher T --student student-tok --out shards
      vocabshrink init-student --teacher T --tokenizer student-tok --out student
      vocabshrink distill --teacher T --student student --data shards --out run
      vocabshrink evaluate --teacher T --student run/final --out report
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


# --- build-vocab (issue 3) ---

# --- align, inspect (issue 4) ---

# --- init-student (issue 5) ---

# --- distill (issue 6) ---

# --- evaluate, demo (issue 7) ---


def main() -> None:
    cli(prog_name="vocabshrink")


if __name__ == "__main__":
    main()
