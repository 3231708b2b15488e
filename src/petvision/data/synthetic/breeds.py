"""The generated breeds: 8 cat and 8 dog breeds, each with a typical coat from one pool shared
by both species, so colour never tells the species."""

from __future__ import annotations

from dataclasses import dataclass

from petvision.data import layout

# RGB colours shared by both species' coats; backgrounds draw from them too.
FUR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (32, 30, 30),
    "dark_brown": (72, 50, 36),
    "brown": (122, 82, 52),
    "ginger": (204, 122, 60),
    "golden": (212, 166, 92),
    "fawn": (198, 170, 124),
    "cream": (234, 218, 188),
    "white": (238, 236, 230),
    "grey": (128, 128, 132),
    "blue_grey": (104, 110, 124),
    "silver": (184, 184, 178),
}
SCENE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (82, 130, 62),
    (112, 122, 60),
    (132, 172, 210),
    (62, 82, 150),
    (170, 52, 50),
    (212, 196, 160),
    (150, 102, 62),
    (150, 150, 150),
    (52, 52, 58),
    (62, 130, 130),
    (112, 72, 130),
    (222, 200, 82),
)
FUR_NAMES = tuple(FUR_COLOURS)
MIN_CONTRAST = 80.0  # RGB distance between a pet's coat and the colours around it
EYE_COLOURS = ((120, 160, 60), (200, 150, 40), (110, 70, 30), (90, 140, 190), (60, 40, 25))


@dataclass(frozen=True)
class Coat:
    pattern: str  # solid | ticked | tabby | spotted | patches | points
    base: tuple[str, ...]
    secondary: tuple[str, ...] = ()


COATS: dict[str, Coat] = {
    "black": Coat("solid", ("black", "dark_brown")),
    "white": Coat("solid", ("white", "cream")),
    "grey": Coat("solid", ("grey", "blue_grey", "silver")),
    "ginger": Coat("ticked", ("ginger", "golden", "brown", "fawn")),
    "tabby": Coat(
        "tabby", ("ginger", "brown", "silver", "fawn", "golden"), ("black", "dark_brown", "brown")
    ),
    "spotted": Coat(
        "spotted", ("golden", "fawn", "silver", "white", "ginger"), ("black", "dark_brown", "brown")
    ),
    "patches": Coat("patches", ("white", "cream"), ("black", "brown", "ginger", "dark_brown")),
    "points": Coat("points", ("cream", "fawn", "white"), ("dark_brown", "black", "brown")),
}


@dataclass(frozen=True)
class Breed:
    """Shape in units of the body's length; ``ear`` and ``snout`` in units of the head's radius."""

    name: str
    coat: str  # its typical coat (a cat breed and a dog breed share each one)
    body_depth: float  # half-height of the body ellipse
    leg_length: float
    head: float  # head radius
    ear: float  # cats: height of the upright ear; dogs: length of the hanging ear
    snout: float  # how far a dog's snout protrudes beyond the head; 0 for cats
    tail_length: float
    tail_width: float

    @property
    def species(self) -> int:
        return layout.species_of(self.name)


BREEDS: tuple[Breed, ...] = (
    # cats: upright triangular ears, no snout, long thin tail
    Breed("Abyssinian", "ginger", 0.24, 0.24, 0.26, 1.44, 0.00, 0.78, 0.075),
    Breed("Bengal", "spotted", 0.25, 0.24, 0.26, 1.25, 0.00, 0.76, 0.083),
    Breed("Bombay", "black", 0.25, 0.23, 0.27, 1.25, 0.00, 0.74, 0.075),
    Breed("Maine_Coon", "tabby", 0.28, 0.24, 0.27, 1.50, 0.00, 0.80, 0.128),
    Breed("Persian", "white", 0.28, 0.19, 0.28, 1.00, 0.00, 0.63, 0.128),
    Breed("Ragdoll", "patches", 0.27, 0.23, 0.27, 1.19, 0.00, 0.74, 0.112),
    Breed("Russian_Blue", "grey", 0.24, 0.24, 0.26, 1.38, 0.00, 0.76, 0.075),
    Breed("Siamese", "points", 0.22, 0.27, 0.25, 1.62, 0.00, 0.83, 0.068),
    # dogs: hanging ears, protruding snout, shorter straighter tail
    Breed("basset_hound", "patches", 0.27, 0.14, 0.27, 2.07, 1.23, 0.34, 0.098),
    Breed("boxer", "tabby", 0.28, 0.33, 0.27, 1.15, 0.85, 0.19, 0.105),
    Breed("english_cocker_spaniel", "ginger", 0.28, 0.25, 0.27, 1.95, 1.04, 0.26, 0.105),
    Breed("german_shorthaired", "spotted", 0.25, 0.33, 0.26, 1.49, 1.30, 0.27, 0.090),
    Breed("great_pyrenees", "white", 0.32, 0.30, 0.28, 1.26, 1.04, 0.36, 0.150),
    Breed("havanese", "grey", 0.29, 0.21, 0.27, 1.61, 0.85, 0.29, 0.135),
    Breed("newfoundland", "black", 0.33, 0.28, 0.28, 1.26, 0.98, 0.34, 0.150),
    Breed("pug", "points", 0.31, 0.23, 0.29, 1.03, 0.78, 0.15, 0.120),
)
COAT_NAMES = tuple(COATS)
TYPICAL_COAT_P = 0.7  # otherwise any coat: breeds hint at colour, species never do
