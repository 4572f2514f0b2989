"""mtlkit-contours: an example third-party mtlkit plugin.

It adds the auxiliary task ``centres``: a heatmap of object centres computed
from the detection boxes, so it needs no extra annotation. See README.md.
"""

from mtlkit_contours.task import CentresMetric, CentresTask, centre_heatmap

__all__ = ["CentresTask", "CentresMetric", "centre_heatmap"]
__version__ = "0.1.0"
