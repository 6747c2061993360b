"""Errors meant for people: the CLI prints them as one line, without a traceback."""


class PatchworldError(Exception):
    """A problem with the user's input (recipe, files, sizes) that the message fully explains."""


class ComponentError(PatchworldError):
    """An unknown component name, a duplicate registration, or a bad key for a component."""


class DataError(PatchworldError):
    """Unreadable videos, empty folders, sizes that do not fit the model."""


class ContractError(ComponentError):
    """A component broke its part's contract (a shape, dtype or keyword rule of `patchworld.interfaces`); the
    message names the component, the rule, what it did and the fix."""


def require_size2(owner: str, size) -> tuple[int, int]:
    """`size` as (H, W) of two positive ints, or a `ComponentError` naming ``owner.size``."""
    if isinstance(size, (str, bytes)) or len(size) != 2:
        raise ComponentError(f"{owner}.size must be (H, W), got {size!r}")
    require_positive(owner, height=int(size[0]), width=int(size[1]))
    return int(size[0]), int(size[1])


def require_positive(owner: str, **settings: int | float) -> None:
    """A `ComponentError` naming `owner`'s first setting that is not positive (``ViT.dim must be >= 1, got 0``);
    a constructor calls it with the sizes and counts a user sets in a recipe."""
    for name, value in settings.items():
        if not value > 0:
            bound = ">= 1" if isinstance(value, int) else "> 0"
            raise ComponentError(f"{owner}.{name} must be {bound}, got {value!r}")
