"""Start an exercise on a running lab: run its setup (what it breaks) under the lab's lock."""

from __future__ import annotations

from labbuilder.compile.ops import Ns
from labbuilder.engine.runtime import LabHandle
from labbuilder.errors import LabError
from labbuilder.lifecycle.lock import lab_lock
from labbuilder.spec import refs
from labbuilder.spec.exercise import Exercise, load_exercise


def start_exercise(handle: LabHandle, exercise_file: str) -> Exercise:
    """Load the exercise against the lab's model (names must exist in it), then run each setup step
    where it says; LabError on the first step that fails."""
    model = handle.model()
    ex = load_exercise(exercise_file, model)
    with lab_lock(handle.name, "exercise"):
        for step in ex.setup:
            where = refs.place(model, step.on)
            result = handle.enter(Ns(where.key, where.netns), ("sh", "-c", step.run))
            if result.code != 0:
                raise LabError(
                    f"lab {handle.name}: exercise setup on {step.on}: `{step.run}` failed: {result.output.strip()}"
                )
    return ex
