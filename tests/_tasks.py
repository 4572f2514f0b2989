"""Minimal real tasks for tests of what handles tasks (registry, plugins,
composition), not of what a task computes."""

from mtlkit.task import Task


class InertMethods:
    """A task's required methods doing nothing: a zero loss that keeps the
    graph, the prediction as its own detections, no metric. Mix in before the
    task base class."""

    def loss(self, prediction, batch):
        return prediction.sum() * 0

    def postprocess(self, prediction, image_size):
        return prediction

    def new_metric(self):
        return None


class InertTask(InertMethods, Task):
    """A primary task that computes nothing."""
