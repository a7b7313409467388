"""Progress reporting: the library's adapters and the CLI's rich bar."""

from __future__ import annotations




def test_progress_adapters():
    from alexnet_deploy.progress import Progress, as_progress

    seen = []
    steps = as_progress(seen.append)
    steps("one")
    steps.start("two", 5)
    steps.advance(3)
    # A steps-only callback gets messages, not counted work: advance adds no message.
    assert seen == ["one", "two"]
    quiet = as_progress(None)
    quiet("ignored")
    assert isinstance(quiet, Progress)
    assert as_progress(quiet) is quiet  # a Progress passes through unwrapped

def test_cli_progress_bar_counts_advanced_units():
    """The CLI's Progress adapter moves rich's bar by exactly the units advanced."""
    from rich.console import Console
    from rich.progress import Progress as Bar

    from alexnet_deploy.cli.app import _RichProgress

    with Bar(console=Console(file=open("/dev/null", "w")), auto_refresh=False) as bar:
        progress = _RichProgress(bar)
        progress.start("images", 10)
        progress.advance(3)
        progress.advance()
        (task,) = bar.tasks
        assert (task.completed, task.total, task.description) == (4, 10, "images")
        progress("loading model 2")  # a message inside counted work (bench does this) keeps the count
        progress.advance(6)
        (task,) = bar.tasks
        assert (task.completed, task.total, task.description) == (10, 10, "loading model 2 …")
        progress("writing")  # after the counted work: an uncounted step, a spinner from zero
        (task,) = bar.tasks
        assert (task.completed, task.total, task.description) == (0, None, "writing …")
