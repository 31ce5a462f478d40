"""Lesson 02's exercise checks against answers a learner writes: each common mistake gets
``Not yet`` with the message that names it, and right answers written differently from the
reference solution get ``Correct``."""

import pytest
from exercise_cases import alternative_is_correct, mistake_gets_its_message

# (lesson, exercise, wrong answer, what the feedback must say)
MISTAKES = [
    (
        "02",
        "q1",
        """
        def save_and_reload(model, make_model, path):
            torch.save(model, path)
            return torch.load(path, weights_only=False)
        """,
        "weights_only=True) refuses the file",
    ),
    (
        "02",
        "q1",
        """
        def save_and_reload(model, make_model, path):
            torch.save(dict(model.named_parameters()), path)
            new = make_model()
            new.load_state_dict(torch.load(path), strict=False)
            return new
        """,
        "such as layers.1.running_mean",
    ),
    (
        "02",
        "q1",
        """
        def save_and_reload(model, make_model, path):
            torch.save(model.state_dict(), path)
            return make_model()
        """,
        "the new model never read the file",
    ),
    (
        "02",
        "q1",
        """
        def save_and_reload(model, make_model, path):
            torch.save(model.state_dict(), path)
            return model
        """,
        "you returned the model you were given",
    ),
    (
        "02",
        "q2",
        """
        def load_whole_model(path):
            return torch.load(path, weights_only=False)
        """,
        "loading a file ran a function that the file asked for",
    ),
    (
        "02",
        "q2",
        """
        def load_whole_model(path):
            try:
                layers = [nn.Sequential, nn.Conv2d, nn.MaxPool2d, nn.Flatten, nn.Linear]
                with torch.serialization.safe_globals([LessonNetSequential, *layers]):
                    return torch.load(path)
            except Exception:
                return torch.load(path, weights_only=False)
        """,
        "loading a file ran a function that the file asked for",
    ),
    (
        "02",
        "q2",
        """
        def load_whole_model(path):
            return torch.load(path)
        """,
        "Unsupported global: GLOBAL cifar_course.models.LessonNetSequential",
    ),
    (
        "02",
        "q3",
        """
        def to_course_keys(lecture_state):
            return {k.replace('model1.', 'model.'): v for k, v in lecture_state.items()}
        """,
        "LessonNet has no key 'model.0.weight'",
    ),
    (
        "02",
        "q3",
        """
        def to_course_keys(lecture_state):
            return dict(zip(sorted(LessonNet().state_dict()), lecture_state.values()))
        """,
        "size mismatch for conv1.weight",
    ),
    (
        "02",
        "q1",
        """
        import copy
        def save_and_reload(model, make_model, path):
            torch.save(model.state_dict(), path)
            return copy.deepcopy(model)
        """,
        "was not built by make_model()",
    ),
    (
        "02",
        "q1",
        """
        def save_and_reload(model, make_model, path):
            torch.save(model.state_dict(), path)
            new = make_model()
            new.load_state_dict(model.state_dict())
            return new
        """,
        "the new model never read the file",
    ),
    (
        "02",
        "q1",
        """
        import pickle
        def save_and_reload(model, make_model, path):
            with open(path, "wb") as f:
                pickle.dump(model.state_dict(), f)
            new = make_model()
            with open(path, "rb") as f:
                new.load_state_dict(pickle.load(f))
            return new
        """,
        "refuses the file: it was not written by torch.save",
    ),
    (
        "02",
        "q2",
        """
        def load_whole_model(path):
            layers = [nn.Sequential, nn.Conv2d, nn.MaxPool2d, nn.Flatten, nn.Linear]
            try:
                with torch.serialization.safe_globals([LessonNetSequential, *layers]):
                    return torch.load(path)
            except Exception:
                return None
        """,
        "returned instead of raising",
    ),
    # issue 31: a file read into memory first; tensors without values
    (
        "02",
        "q3",
        """
        def to_course_keys(lecture_state):
            names = LessonNet().state_dict().keys()
            return {name: value.to("meta") for name, value in zip(names, lecture_state.values())}
        """,
        "is on the meta device: it has a shape but no values",
    ),
    (
        "02",
        "q3",
        """
        def to_course_keys(lecture_state):
            return LessonNet().state_dict()
        """,
        "the names are right, but the tensor under",
    ),
    (
        "02",
        "q1",
        """
        def save_and_reload(model, make_model, path):
            torch.save(model.state_dict(), path)
            new_model = make_model()
            torch.load(path, weights_only=True)
            new_model.load_state_dict(model.state_dict())
            return new_model
        """,
        "was given other tensors than the file's",
    ),
]

# (lesson, a right answer written differently)
ALTERNATIVES = [
    (
        "02",
        """
        def save_and_reload(model, make_model, path):
            torch.save({"model": model.state_dict(), "epoch": 1}, path)
            new = make_model()
            new.load_state_dict(torch.load(path, weights_only=True)["model"])
            return new
        """,
    ),
    # found by the audit of 2026-11-28: these were marked "Not yet"
    (
        "02",
        """
        def save_and_reload(model, make_model, path):
            torch.save(model.state_dict(), path)
            new = make_model()
            with open(path, "rb") as f:  # torch.load takes an open file too
                new.load_state_dict(torch.load(f, weights_only=True))
            return new
        """,
    ),
    # issue 31: a file read into memory first; tensors without values
    (
        "02",
        """
        import io

        def save_and_reload(model, make_model, path):
            torch.save(model.state_dict(), path)
            new_model = make_model()
            with open(path, "rb") as f:
                buffer = io.BytesIO(f.read())
            new_model.load_state_dict(torch.load(buffer, weights_only=True))
            return new_model
        """,
    ),
]


@pytest.mark.parametrize(("lesson", "number", "answer", "expected"), MISTAKES)
def test_each_common_mistake_gets_its_own_message(lesson, number, answer, expected):
    mistake_gets_its_message(lesson, number, answer, expected)


@pytest.mark.parametrize(("lesson", "answer"), ALTERNATIVES)
def test_right_answers_written_differently_are_correct(lesson, answer):
    alternative_is_correct(lesson, answer)
