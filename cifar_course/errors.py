"""The one exception type the course raises for problems a learner can fix."""


class CourseError(Exception):
    """A problem with the learner's data, files or arguments, with a message saying what to do."""
