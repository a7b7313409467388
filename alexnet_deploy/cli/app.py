"""The Typer app, its error mapping, progress display, JSON and table output.

Errors the user can fix print as one or two lines and exit with their kind's code (2 bad
input, 1 a failed check, 4 a runtime or environment failure); a bug says "internal error"
and exits 3. ``--debug`` anywhere on the command line shows the traceback (the exit code
stays the same).
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from alexnet_deploy import __version__
from alexnet_deploy.errors import AlexnetError
from alexnet_deploy.progress import Progress

DEBUG_ENV = "ALEXNET_DEBUG"
INTERNAL_ERROR_EXIT = 3
# What Ctrl-C leaves, printed with exit 130. Every output file is written through fileio.atomic_write (or
# staged and renamed into place), so this holds for the commands not listed below; a command that writes
# otherwise says so here, or raises a KeyboardInterrupt with ``what_was_left`` (predict --ray --output DIR).
INTERRUPTED = "interrupted; no output file was left half-written (each is renamed into place only when complete)."
INTERRUPTED_BY_COMMAND = {
    "quickstart": "interrupted; the quickstart folder keeps the files made so far (an image being written may be cut short); "
                  "rerun with --force to make them all again.",
}
# Wide enough that no table or line is cut when stdout is a file or a CI log (rich would
# otherwise assume 80 columns); a terminal keeps its own width.
_PIPE_WIDTH = 1000


class _TrimmedLines:
    """stdout or stderr (looked up at each write, as a test runner may swap it) with each line's
    trailing spaces removed: rich pads table cells to their column, which a pipe or a file keeps."""

    def __init__(self, stderr: bool):
        self.stderr = stderr
        self.pending = ""

    @property
    def target(self):
        return sys.stderr if self.stderr else sys.stdout

    def write(self, text: str) -> int:
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        if lines:
            self.target.write("".join(line.rstrip(" ") + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.target.write(self.pending)
            self.pending = ""
        self.target.flush()

    def isatty(self) -> bool:
        return False


def _console(stderr: bool) -> Console:
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return Console(stderr=stderr, highlight=False, soft_wrap=True)
    return Console(file=_TrimmedLines(stderr), highlight=False, soft_wrap=True, width=_PIPE_WIDTH)


out = _console(stderr=False)
err = _console(stderr=True)


class _PlainHelpOption:
    """``--help`` is a flag: show no ``<bool>`` after it."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class Command(_PlainHelpOption, TyperCommand):
    """Help that does not suggest values for flags, and plain argument names in the usage line."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.get_params(ctx) else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar or param.name.upper()
                if param.nargs != 1 and not name.endswith("..."):
                    name += "..."
                pieces.append(name if param.required else f"[{name}]")
        return pieces


def _json_value_follows(token: str | None) -> bool:
    return token is not None and (token == "-" or token.lower().endswith(".json"))


def _ray_value_follows(token: str | None) -> bool:
    from alexnet_deploy.deploy.ray_batch import is_ray_address

    return is_ray_address(token)


# Options with an optional value: flag -> (the value a bare flag means, whether the next token is its value).
OPTIONAL_VALUE_FLAGS = {
    "--json": ("-", _json_value_follows),  # stdout
    "--ray": ("local", _ray_value_follows),  # a local Ray instance (or RAY_ADDRESS when set)
}


def normalise_optional_flags(args: list[str]) -> list[str]:
    """Complete a bare optional-value flag: ``--json`` alone means ``--json -``, ``--ray`` alone ``--ray local``.

    Click has no option with an optional value that leaves a following positional argument
    alone, so a bare flag is completed here: the next token is its value only when it looks
    like one (``-`` or ``*.json`` for --json; ``auto``, ``local``, ``ray://...``, ``HOST:PORT``
    for --ray), so ``predict m.onnx --ray images/`` keeps ``images/`` as a source.
    """
    result: list[str] = []
    for index, token in enumerate(args):
        result.append(token)
        if token in OPTIONAL_VALUE_FLAGS:
            bare, takes_value = OPTIONAL_VALUE_FLAGS[token]
            if not takes_value(args[index + 1] if index + 1 < len(args) else None):
                result.append(bare)
    return result


# Typer may vendor its own copy of click: take its exception base from a public Typer name.
_ClickException = next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException")


class Group(_PlainHelpOption, TyperGroup):
    """The ``alexnet`` group: commands listed in the order they were declared; ``--json`` and ``--ray`` normalised."""

    def list_commands(self, ctx) -> list[str]:
        return list(self.commands)

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        return super().parse_args(ctx, normalise_optional_flags(list(args)))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Usage errors as the toolkit's other errors: one line with the problem, one with the fix, exit 2.

        ``--debug`` before the command lasts for this invocation only (the app may be embedded
        and invoked again).
        """
        debug_before = os.environ.get(DEBUG_ENV)
        try:
            return self._main(args, prog_name, complete_var, standalone_mode, **extra)
        finally:
            if debug_before is None:
                os.environ.pop(DEBUG_ENV, None)
            else:
                os.environ[DEBUG_ENV] = debug_before

    def _main(self, args, prog_name, complete_var, standalone_mode, **extra):
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _ClickException as exc:
            if not standalone_mode:
                raise
            problem = " ".join(exc.format_message().replace("Value error, ", "").split())
            err.print(Text("error: ", style="red") + Text(problem))
            context = getattr(exc, "ctx", None)
            where = context.command_path if context is not None else "alexnet"
            err.print(f"  fix: see `{where} --help`", markup=False)
            sys.exit(exc.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            err.print("aborted", markup=False)
            sys.exit(1)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    name="alexnet",
    cls=Group,
    help="Take trained PyTorch AlexNet checkpoints to production: export to ONNX with native LRN, verify parity, quantize to FP16/INT8, evaluate accuracy, build TensorRT engines, benchmark runtimes, label images, package for Triton, serve over HTTP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def reflow_help(doc: str | None) -> str | None:
    """A docstring with each paragraph on one line, so ``--help`` wraps at the terminal's width.

    Typer's rich help keeps the source's line breaks after the first paragraph, and a terminal
    narrower than the source then breaks every line twice (a long line, then a short one).
    """
    if not doc:
        return doc
    return "\n\n".join(" ".join(line.strip() for line in paragraph.splitlines()) for paragraph in inspect.cleandoc(doc).split("\n\n"))


def command(name: str | None = None):
    """Register a CLI command: help without value hints for flags, paragraphs reflowed, the toolkit's error mapping."""

    def register(function):
        wrapped = handles_errors(function)
        wrapped.__doc__ = reflow_help(function.__doc__)
        return app.command(name=name, cls=Command)(wrapped)

    return register


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV) == "1"


def _fail(exc: AlexnetError):
    """Print ``exc`` as the error line and its fix, and exit with its code (the traceback with --debug)."""
    if debug_enabled():
        traceback.print_exc()
    err.print(Text("error: ", style="red") + Text(exc.problem))
    if exc.fix:
        err.print(f"  fix: {exc.fix}", markup=False)
    raise typer.Exit(exc.exit_code)


def handles_errors(function):
    """Map the toolkit's errors to a short message and their exit code (tracebacks only with --debug)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except AlexnetError as exc:
            _fail(exc)
        except KeyboardInterrupt as exc:
            # A command that writes more than single files says what it left (e.g. predict --ray --output DIR);
            # otherwise the rule every file write follows (fileio.atomic_write) is all that can be said.
            err.print(getattr(exc, "what_was_left", None) or INTERRUPTED_BY_COMMAND.get(function.__name__, INTERRUPTED), markup=False)
            raise typer.Exit(130)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # a bug: say so briefly, keep details for --debug
            from alexnet_deploy.errors import missing_dependency

            mapped = missing_dependency(exc) if isinstance(exc, ImportError) else None
            if mapped is not None:  # an optional package imported deep inside a command
                _fail(mapped)
            if debug_enabled():
                traceback.print_exc()
            detail = str(exc).splitlines()[0][:200] if str(exc) else ""
            err.print(Text("internal error: ", style="red") + Text(f"{type(exc).__name__}: {detail}"))
            err.print("  fix: rerun with --debug and report the traceback", markup=False)
            raise typer.Exit(INTERNAL_ERROR_EXIT)

    return wrapper


class _RichProgress(Progress):
    """Steps as a spinner line, counted work as a bar, on stderr (see alexnet_deploy.progress)."""

    def __init__(self, bar):
        self.bar = bar
        self.task = bar.add_task("starting", total=None)

    def __call__(self, message: str) -> None:
        task = self.bar.tasks[-1]
        if task.total is not None and not task.finished:
            # A message inside counted work (bench's "loading ...") relabels it, keeping the count.
            self.bar.update(self.task, description=escape(f"{message} …"))
            return
        # rich's update cannot turn a bar back into a spinner (total=None means "unchanged").
        self.bar.remove_task(self.task)
        self.task = self.bar.add_task(escape(f"{message} …"), total=None)

    def start(self, description: str, total: int) -> None:
        self.bar.update(self.task, description=escape(description), total=total, completed=0)

    def advance(self, units: int = 1) -> None:
        self.bar.advance(self.task, units)


@contextmanager
def progress_steps(quiet: bool = False) -> Iterator[Progress]:
    """Progress on stderr (spinner for steps, bar for counted work); yields a ``Progress``."""
    if quiet or not err.is_terminal:
        yield Progress()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, SpinnerColumn, TextColumn, TimeRemainingColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Bar(*columns, console=err, transient=True) as bar:
        yield _RichProgress(bar)


def _finite(value):
    """JSON has no NaN/Infinity: write non-finite numbers as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class JsonTarget:
    """Where ``--json [FILE|-]`` sends the report: nowhere, stdout ('-') or a file checked before the work."""

    def __init__(self, value: Optional[Path]):
        self.value = value
        self.to_stdout = value is not None and str(value) == "-"
        self.path = None if value is None or self.to_stdout else Path(value)
        if self.path is not None:
            from alexnet_deploy.fileio import check_writable

            check_writable(self.path, "JSON report")

    @property
    def quiet(self) -> bool:
        """True when stdout carries the JSON, so nothing else may be printed there."""
        return self.to_stdout

    def emit(self, data: dict[str, Any], table=None) -> None:
        """Write the JSON where asked; print ``table`` unless stdout carries the JSON."""
        if self.value is not None:
            text = json.dumps(_finite(data), indent=2, default=str, allow_nan=False)
            if self.to_stdout:
                out.print(text, markup=False, highlight=False)
            else:
                from alexnet_deploy.fileio import atomic_write_bytes

                atomic_write_bytes(self.path, (text + "\n").encode())
        if table is not None and not self.to_stdout:
            out.print(table)


def _version_callback(value: bool):
    if value:
        out.print(f"alexnet-deploy {__version__}")
        raise typer.Exit()


def _debug_callback(value: bool):
    if value:
        os.environ[DEBUG_ENV] = "1"


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, metavar="", help="Show the version and exit."),
    debug: bool = typer.Option(False, "--debug", callback=_debug_callback, is_eager=True, metavar="",
                               help="Show the traceback of any error (the exit code stays the same). Also accepted after the command."),
):
    """alexnet: export, verify, quantize, evaluate, build, benchmark, inspect, predict, package and serve AlexNet models. Add --debug anywhere to see tracebacks."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``alexnet`` and ``python -m alexnet_deploy``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        args.remove("--debug")
        os.environ[DEBUG_ENV] = "1"
    else:
        os.environ.pop(DEBUG_ENV, None)
    import warnings

    from PIL import Image

    # Images over the pixel limit are refused with their own line (imaging.MAX_IMAGE_PIXELS,
    # PIL's own threshold): PIL's warning about the same image would only repeat it, untidily.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    from alexnet_deploy.cli import memory

    if memory.suits(args):  # model-sized buffers reused, not faulted in again (a third of quickstart's time)
        memory.keep_freed_memory()
    app(args=args, prog_name="alexnet")
