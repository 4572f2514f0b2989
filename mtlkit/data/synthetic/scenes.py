"""Scene types: room sizes and which objects appear, how many and where.

This table is the generator's co-occurrence model: a scene type decides the
probability that each kind of object is present, its count, its size variant
(a "coffee" table in a living room, a "desk" in an office) and its placement:

* ``wall``: back against a wall, facing into the room;
* ``corner``: against a wall, near one of its ends;
* ``center``: near the middle of the room, aligned with the walls;
* ``free``: anywhere on the floor, any orientation;
* ``around``: around an already placed ``table``, facing it (chairs);
* ``on``: on the top of an already placed object of a class in ``on``.

Items are placed in the order listed, so big furniture comes first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

SCENES: Tuple[str, ...] = ("bathroom", "bedroom", "dining_room", "kitchen", "living_room", "office")


@dataclass(frozen=True)
class Item:
    """One line of a scene recipe.

    Attributes:
        cls: object class name.
        p: probability that the item is present in a room of this type.
        count: (min, max) number of instances when present (uniform, inclusive).
        variant: size / shape variant passed to the class builder.
        place: placement mode (see the module docstring).
        on: classes that can support it (``place == "on"``).
    """

    cls: str
    p: float
    count: Tuple[int, int] = (1, 1)
    variant: str = ""
    place: str = "wall"
    on: Tuple[str, ...] = ()


@dataclass(frozen=True)
class SceneRecipe:
    """Room size ranges (metres) and the items of one scene type."""

    width: Tuple[float, float]
    depth: Tuple[float, float]
    height: Tuple[float, float]
    items: Tuple[Item, ...]


RECIPES: Dict[str, SceneRecipe] = {
    "bathroom": SceneRecipe((1.8, 3.2), (2.0, 3.6), (2.3, 2.7), (
        Item("bathtub", 0.75, place="wall"),
        Item("toilet", 0.95, place="wall"),
        Item("cabinet", 0.6, variant="counter", place="wall"),
        Item("plant", 0.25, variant="small", place="on", on=("cabinet",)),
        Item("plant", 0.15, place="corner"),
        Item("lamp", 0.1, variant="table", place="on", on=("cabinet",)),
    )),
    "bedroom": SceneRecipe((2.8, 5.0), (3.0, 5.5), (2.4, 2.9), (
        Item("bed", 1.0, place="wall"),
        Item("cabinet", 0.7, (1, 2), variant="nightstand", place="wall"),
        Item("cabinet", 0.4, variant="tall", place="wall"),
        Item("table", 0.25, variant="desk", place="wall"),
        Item("bookshelf", 0.25, place="wall"),
        Item("sofa", 0.1, place="wall"),
        Item("chair", 0.3, place="free"),
        Item("lamp", 0.6, (1, 2), variant="table", place="on", on=("cabinet", "table")),
        Item("lamp", 0.15, place="corner"),
        Item("monitor", 0.12, place="on", on=("table",)),
        Item("plant", 0.3, place="corner"),
    )),
    "dining_room": SceneRecipe((3.0, 5.5), (3.0, 5.5), (2.4, 3.0), (
        Item("table", 1.0, variant="dining", place="center"),
        Item("cabinet", 0.6, place="wall"),
        Item("bookshelf", 0.2, place="wall"),
        Item("chair", 1.0, (4, 8), place="around"),
        Item("plant", 0.4, (1, 2), place="corner"),
        Item("plant", 0.3, variant="small", place="on", on=("table", "cabinet")),
        Item("lamp", 0.25, place="corner"),
        Item("monitor", 0.1, variant="tv", place="on", on=("cabinet",)),
    )),
    "kitchen": SceneRecipe((2.5, 4.5), (3.0, 5.0), (2.4, 2.8), (
        Item("cabinet", 1.0, (2, 6), variant="counter", place="wall"),
        Item("cabinet", 0.3, variant="tall", place="wall"),
        Item("table", 0.6, variant="dining", place="center"),
        Item("chair", 0.6, (2, 4), place="around"),
        Item("plant", 0.35, variant="small", place="on", on=("cabinet", "table")),
        Item("monitor", 0.1, variant="tv", place="on", on=("cabinet",)),
        Item("lamp", 0.05, variant="table", place="on", on=("cabinet",)),
    )),
    "living_room": SceneRecipe((3.5, 6.5), (3.5, 6.5), (2.4, 3.0), (
        Item("sofa", 1.0, (1, 2), place="wall"),
        Item("cabinet", 0.7, place="wall"),
        Item("bookshelf", 0.5, place="wall"),
        Item("table", 0.8, variant="coffee", place="center"),
        Item("chair", 0.5, (1, 2), variant="arm", place="free"),
        Item("monitor", 0.5, variant="tv", place="on", on=("cabinet",)),
        Item("lamp", 0.6, place="corner"),
        Item("lamp", 0.2, variant="table", place="on", on=("cabinet",)),
        Item("plant", 0.6, (1, 2), place="corner"),
    )),
    "office": SceneRecipe((3.0, 6.0), (3.0, 6.0), (2.5, 3.0), (
        Item("table", 1.0, (1, 3), variant="desk", place="wall"),
        Item("bookshelf", 0.6, (1, 2), place="wall"),
        Item("cabinet", 0.6, (1, 2), place="wall"),
        Item("sofa", 0.1, place="wall"),
        Item("chair", 0.95, (1, 3), place="around"),
        Item("monitor", 0.9, (1, 4), place="on", on=("table",)),
        Item("lamp", 0.3, variant="table", place="on", on=("table", "cabinet")),
        Item("lamp", 0.15, place="corner"),
        Item("plant", 0.4, place="corner"),
    )),
}
assert tuple(sorted(RECIPES)) == SCENES
