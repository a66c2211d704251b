"""The task registry: every entry resolves, and its example config validates as that task."""

from pathlib import Path

import pytest

from inmaterio.tasks.registry import TASKS, RunnableConfig, load_run_config, resolve, task_of

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_resolves_and_its_example_runs_as_it(name):
    entry = TASKS[name]
    assert issubclass(resolve(entry.config), RunnableConfig)
    for target in (entry.runner, entry.report, entry.prepare):
        assert target is None or callable(resolve(target)), target
    config = load_run_config(EXAMPLES / entry.example)
    assert isinstance(config, resolve(entry.config)) and task_of(config) is entry
    assert entry.kind == f"inmaterio.task.{name}"
