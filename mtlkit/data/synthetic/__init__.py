"""Synthetic RGB-D rooms: procedural indoor scenes rendered with Embree.

Each sample has an RGB image, metric depth, camera-frame surface normals,
instance boxes for :data:`CLASSES` and a scene type out of :data:`SCENES`.
Object classes differ by 3D shape and size only (colours and textures come
from pools shared by every class); scene types decide which objects appear.
See docs/synthetic.md.

    from mtlkit.data.synthetic import SyntheticRooms
    ds = SyntheticRooms(split="train", size=400, seed=0, image_size=(240, 320))
    sample = ds[0]   # dict: image, boxes, labels, scene, depth, normals, masks, has, meta
"""

from .dataset import SyntheticRooms, to_sample
from .generate import SPLITS, RenderOptions, generate_sample, make_options
from .objects import CLASSES
from .scenes import SCENES

__all__ = ["SyntheticRooms", "CLASSES", "SCENES", "SPLITS", "RenderOptions", "generate_sample",
           "make_options", "to_sample"]
